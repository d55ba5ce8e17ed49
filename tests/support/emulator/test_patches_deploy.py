"""The emulator patches deploy depends on (n..q), checked against what real AWS does.

Every test_patch_* here fails on plain moto 5.2.5 (BAKERY_EMULATOR_NO_PATCHES=1).
"""

from __future__ import annotations

import uuid

import pytest
from botocore.exceptions import ClientError


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _group(emu, ec2, size: int = 2, image_tags: dict | None = None):
    """A VPC subnet, a target group, an AMI (tagged), a launch template and an ASG of `size`."""
    asg, elb = emu.client("autoscaling"), emu.client("elbv2")
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.9.1.0/24",
                               AvailabilityZone="us-east-1a")["Subnet"]["SubnetId"]
    tg = elb.create_target_group(Name=_name("tg"), Protocol="HTTP", Port=80, VpcId=vpc,
                                 TargetType="instance")["TargetGroups"][0]["TargetGroupArn"]
    ami = ec2.register_image(Name=_name("img"))["ImageId"]
    if image_tags:
        ec2.create_tags(Resources=[ami], Tags=[{"Key": k, "Value": v} for k, v in image_tags.items()])
    lt = _name("lt")
    ec2.create_launch_template(LaunchTemplateName=lt, LaunchTemplateData={
        "ImageId": ami, "InstanceType": "t3.micro"})
    name = _name("grp")
    asg.create_auto_scaling_group(
        AutoScalingGroupName=name, LaunchTemplate={"LaunchTemplateName": lt, "Version": "$Latest"},
        MinSize=size, MaxSize=size + 2, DesiredCapacity=size, VPCZoneIdentifier=subnet,
        TargetGroupARNs=[tg])
    return asg, elb, name, tg


def _instances(asg, name: str) -> list[str]:
    g = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"][0]
    return sorted(i["InstanceId"] for i in g["Instances"])


def _targets(elb, tg: str) -> dict[str, str]:
    return {d["Target"]["Id"]: d["TargetHealth"]["State"]
            for d in elb.describe_target_health(TargetGroupArn=tg)["TargetHealthDescriptions"]}


# --- n: terminated instances leave their target groups -------------------------------------

def test_patch_n_terminated_instance_is_deregistered(emu, ec2):
    asg, elb, name, tg = _group(emu, ec2)
    old = _instances(asg, name)
    asg.terminate_instance_in_auto_scaling_group(InstanceId=old[0],
                                                 ShouldDecrementDesiredCapacity=False)
    now = _instances(asg, name)
    assert old[0] not in now and len(now) == 2
    assert set(_targets(elb, tg)) == set(now)
    asked = elb.describe_target_health(TargetGroupArn=tg, Targets=[{"Id": old[0]}])
    assert asked["TargetHealthDescriptions"][0]["TargetHealth"]["State"] == "draining"
    asg.delete_auto_scaling_group(AutoScalingGroupName=name, ForceDelete=True)
    assert _targets(elb, tg) == {}


# --- o: registration at launch only, none while AddToLoadBalancer is suspended ------------

def test_patch_o_deregistered_instances_stay_out_while_suspended(emu, ec2):
    asg, elb, name, tg = _group(emu, ec2)
    ids = _instances(asg, name)
    asg.suspend_processes(AutoScalingGroupName=name,
                          ScalingProcesses=["Launch", "Terminate", "AddToLoadBalancer"])
    elb.deregister_targets(TargetGroupArn=tg, Targets=[{"Id": i} for i in ids])
    # Any capacity change made moto re-register every instance of the group.
    asg.update_auto_scaling_group(AutoScalingGroupName=name, MaxSize=5)
    asg.set_desired_capacity(AutoScalingGroupName=name, DesiredCapacity=2)
    assert _targets(elb, tg) == {}
    asg.resume_processes(AutoScalingGroupName=name)
    asg.set_desired_capacity(AutoScalingGroupName=name, DesiredCapacity=3)
    # Only the instance launched now is registered; the ones deregistered by hand stay out.
    new = set(_instances(asg, name)) - set(ids)
    assert len(new) == 1 and set(_targets(elb, tg)) == new


# --- p: unimplemented Auto Scaling actions are InvalidAction ------------------------------

def test_patch_p_instance_refresh_is_invalid_action(emu, ec2):
    asg, _, name, _ = _group(emu, ec2, size=1)
    with pytest.raises(ClientError) as e:
        asg.start_instance_refresh(AutoScalingGroupName=name)
    r = e.value.response
    assert (r["ResponseMetadata"]["HTTPStatusCode"], r["Error"]["Code"]) == (400, "InvalidAction")


# --- q: test control: targets unhealthy by image tag ---------------------------------------

def test_patch_q_image_tag_makes_targets_unhealthy(emu, ec2):
    _, elb, _, tg = _group(emu, ec2, image_tags={"bakery-emulator:target-health": "unhealthy"})
    states = _targets(elb, tg)
    assert len(states) == 2 and set(states.values()) == {"unhealthy"}
    d = elb.describe_target_health(TargetGroupArn=tg)["TargetHealthDescriptions"][0]
    assert d["TargetHealth"]["Reason"] == "Target.FailedHealthChecks"
    _, elb, _, tg = _group(emu, ec2)
    assert set(_targets(elb, tg).values()) == {"healthy"}
