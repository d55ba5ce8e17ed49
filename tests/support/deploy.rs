//! Deploy fixtures on the emulator, made through the SDK the way an operator's account holds
//! them: the network a server group runs in, and the AMIs a deploy moves it between.

use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};
use aws_sdk_elasticloadbalancingv2::types::{ProtocolEnum, TargetTypeEnum};
use bakery::aws::client::AwsContext;

/// `prefix-` and 8 hex digits: names that do not collide between tests sharing one emulator.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// A fresh VPC's subnets (one per availability zone) and its HTTP target group on port 8080.
pub struct Network {
    pub subnet_ids: Vec<String>,
    /// The target group's ARN.
    pub tg: String,
}

impl Network {
    /// The subnets as an Auto Scaling group's `VPCZoneIdentifier` (comma-separated).
    pub fn subnets(&self) -> String {
        self.subnet_ids.join(",")
    }
}

/// The VPC `{net}.0.0/16` in `region`, subnet `{net}.{i}.0/24` in zone `{region}{azs[i]}`.
pub async fn network(ctx: &AwsContext, region: &str, net: &str, azs: &[&str]) -> Network {
    let ec2 = ctx.ec2(region);
    let vpc = ec2
        .create_vpc()
        .cidr_block(format!("{net}.0.0/16"))
        .send()
        .await
        .unwrap()
        .vpc
        .unwrap()
        .vpc_id
        .unwrap();
    let mut subnet_ids = Vec::new();
    for (i, az) in azs.iter().enumerate() {
        let s = ec2
            .create_subnet()
            .vpc_id(&vpc)
            .cidr_block(format!("{net}.{i}.0/24"))
            .availability_zone(format!("{region}{az}"))
            .send()
            .await
            .unwrap();
        subnet_ids.push(s.subnet.unwrap().subnet_id.unwrap());
    }
    let tg = ctx
        .elbv2(region)
        .create_target_group()
        .name(unique("tg"))
        .protocol(ProtocolEnum::Http)
        .port(8080)
        .vpc_id(&vpc)
        .target_type(TargetTypeEnum::Instance)
        .send()
        .await
        .unwrap()
        .target_groups()[0]
        .target_group_arn()
        .unwrap()
        .to_string();
    Network { subnet_ids, tg }
}

/// An AMI registered in `region` and tagged `appversion` (what a bake tags its AMI with).
pub async fn app_ami(ctx: &AwsContext, region: &str, appversion: &str) -> String {
    ctx.ec2(region)
        .register_image()
        .name(unique(appversion))
        .architecture(aws_sdk_ec2::types::ArchitectureValues::X8664)
        .virtualization_type("hvm")
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Image)
                .tags(Tag::builder().key("appversion").value(appversion).build())
                .build(),
        )
        .send()
        .await
        .unwrap()
        .image_id
        .unwrap()
}
