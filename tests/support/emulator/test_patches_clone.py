"""The emulator patches a faithful red/black clone depends on (r..z), checked against what real
AWS does: Classic Load Balancer registration, the 50-tag limit, per-group policy and scheduled
action names, policy alarms, metrics collection, lifecycle hooks at creation, notification
configurations, and the group settings moto drops.

Every test_patch_* here fails on plain moto 5.2.5 (BAKERY_EMULATOR_NO_PATCHES=1).
"""

from __future__ import annotations

import uuid

import pytest
from botocore.exceptions import ClientError


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _template(ec2) -> tuple[str, str]:
    """A VPC subnet and a launch template (by name)."""
    vpc = ec2.create_vpc(CidrBlock="10.8.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.8.1.0/24",
                               AvailabilityZone="us-east-1a")["Subnet"]["SubnetId"]
    ami = ec2.register_image(Name=_name("img"))["ImageId"]
    lt = _name("lt")
    ec2.create_launch_template(LaunchTemplateName=lt, LaunchTemplateData={
        "ImageId": ami, "InstanceType": "t3.micro"})
    return subnet, lt


def _create(asg, subnet, lt, size=1, **extra) -> str:
    name = extra.pop("AutoScalingGroupName", None) or _name("grp")
    asg.create_auto_scaling_group(
        AutoScalingGroupName=name, LaunchTemplate={"LaunchTemplateName": lt, "Version": "1"},
        MinSize=size, MaxSize=size + 2, DesiredCapacity=size, VPCZoneIdentifier=subnet, **extra)
    return name


def _group(asg, name):
    return asg.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"][0]


def _ids(asg, name) -> set[str]:
    return {i["InstanceId"] for i in _group(asg, name)["Instances"]}


# --- r: Classic Load Balancer registration -------------------------------------------------

def test_patch_r_a_group_never_takes_another_groups_instances_out_of_a_classic_elb(emu, ec2):
    asg, elb = emu.client("autoscaling"), emu.client("elb")
    subnet, lt = _template(ec2)
    lb = _name("clb")
    elb.create_load_balancer(LoadBalancerName=lb, Subnets=[subnet], Listeners=[
        {"Protocol": "HTTP", "LoadBalancerPort": 80, "InstanceProtocol": "HTTP",
         "InstancePort": 8080}])

    def registered():
        d = elb.describe_load_balancers(LoadBalancerNames=[lb])["LoadBalancerDescriptions"][0]
        return {i["InstanceId"] for i in d["Instances"]}

    a = _create(asg, subnet, lt, size=2, LoadBalancerNames=[lb])
    b = _create(asg, subnet, lt, size=2, LoadBalancerNames=[lb])
    assert registered() == _ids(asg, a) | _ids(asg, b)
    # Taken out by hand (a disabled generation): stays out through capacity changes.
    asg.suspend_processes(AutoScalingGroupName=a, ScalingProcesses=["AddToLoadBalancer"])
    elb.deregister_instances_from_load_balancer(
        LoadBalancerName=lb, Instances=[{"InstanceId": i} for i in _ids(asg, a)])
    asg.set_desired_capacity(AutoScalingGroupName=a, DesiredCapacity=3)
    asg.set_desired_capacity(AutoScalingGroupName=b, DesiredCapacity=3)
    assert registered() == _ids(asg, b)
    h = elb.describe_instance_health(LoadBalancerName=lb)["InstanceStates"]
    assert {x["InstanceId"] for x in h} == _ids(asg, b)
    # Put back by hand (a rollback): registered again.
    elb.register_instances_with_load_balancer(
        LoadBalancerName=lb, Instances=[{"InstanceId": i} for i in _ids(asg, a)])
    assert registered() == _ids(asg, a) | _ids(asg, b)
    # A group's instance that leaves it leaves the balancer.
    gone = sorted(_ids(asg, b))[0]
    asg.terminate_instance_in_auto_scaling_group(InstanceId=gone,
                                                 ShouldDecrementDesiredCapacity=True)
    assert gone not in registered()


# --- s: 50 tags per group ------------------------------------------------------------------

def test_patch_s_a_group_holds_at_most_50_tags(emu, ec2):
    asg = emu.client("autoscaling")
    subnet, lt = _template(ec2)

    def tags(name, n, start=0):
        return [{"ResourceId": name, "ResourceType": "auto-scaling-group", "Key": f"k{i:02d}",
                 "Value": "v", "PropagateAtLaunch": False} for i in range(start, start + n)]

    over = _name("grp")
    with pytest.raises(ClientError) as e:
        _create(asg, subnet, lt, AutoScalingGroupName=over, Tags=tags(over, 51))
    assert e.value.response["Error"]["Code"] == "LimitExceeded"
    assert not asg.describe_auto_scaling_groups(AutoScalingGroupNames=[over])["AutoScalingGroups"]
    full = _name("grp")
    _create(asg, subnet, lt, AutoScalingGroupName=full, Tags=tags(full, 50))
    with pytest.raises(ClientError) as e:
        asg.create_or_update_tags(Tags=tags(full, 1, start=50))
    assert e.value.response["Error"]["Code"] == "LimitExceeded"
    # Replacing a tag's value adds none.
    asg.create_or_update_tags(Tags=[dict(tags(full, 1)[0], Value="w")])
    assert len(_group(asg, full)["Tags"]) == 50


# --- t: policy and scheduled action names are per group ------------------------------------

def test_patch_t_two_groups_each_keep_their_own_policy_and_schedule(emu, ec2):
    asg = emu.client("autoscaling")
    subnet, lt = _template(ec2)
    a, b = _create(asg, subnet, lt), _create(asg, subnet, lt)
    for g in (a, b):
        asg.put_scaling_policy(AutoScalingGroupName=g, PolicyName="scale-out",
                               AdjustmentType="ChangeInCapacity", ScalingAdjustment=1)
        asg.put_scheduled_update_group_action(AutoScalingGroupName=g,
                                              ScheduledActionName="weekday-morning",
                                              Recurrence="0 7 * * 1-5", DesiredCapacity=2)
    for g in (a, b):
        assert [p["AutoScalingGroupName"] for p in
                asg.describe_policies(AutoScalingGroupName=g)["ScalingPolicies"]] == [g]
        assert len(asg.describe_scheduled_actions(
            AutoScalingGroupName=g)["ScheduledUpdateGroupActions"]) == 1
    asg.delete_policy(AutoScalingGroupName=b, PolicyName="scale-out")
    assert asg.describe_policies(AutoScalingGroupName=a)["ScalingPolicies"]
    assert not asg.describe_policies(AutoScalingGroupName=b)["ScalingPolicies"]
    # Deleting a group deletes its policies, schedule and hooks: a new group of that name has none.
    asg.put_lifecycle_hook(AutoScalingGroupName=a, LifecycleHookName="gate",
                           LifecycleTransition="autoscaling:EC2_INSTANCE_LAUNCHING")
    asg.delete_auto_scaling_group(AutoScalingGroupName=a, ForceDelete=True)
    _create(asg, subnet, lt, AutoScalingGroupName=a)
    assert not asg.describe_policies(AutoScalingGroupName=a)["ScalingPolicies"]
    assert not asg.describe_scheduled_actions(AutoScalingGroupName=a)["ScheduledUpdateGroupActions"]
    assert not asg.describe_lifecycle_hooks(AutoScalingGroupName=a)["LifecycleHooks"]
    assert asg.describe_scheduled_actions(AutoScalingGroupName=b)["ScheduledUpdateGroupActions"]


# --- u: DescribePolicies lists the alarms of each policy ------------------------------------

def test_patch_u_policies_list_the_alarms_that_trigger_them(emu, ec2):
    asg, cw = emu.client("autoscaling"), emu.client("cloudwatch")
    subnet, lt = _template(ec2)
    g = _create(asg, subnet, lt)
    arn = asg.put_scaling_policy(AutoScalingGroupName=g, PolicyName="scale-out",
                                 AdjustmentType="ChangeInCapacity",
                                 ScalingAdjustment=1)["PolicyARN"]
    alarm = _name("cpu-high")
    cw.put_metric_alarm(AlarmName=alarm, MetricName="CPUUtilization", Namespace="AWS/EC2",
                        Statistic="Average", Period=60, EvaluationPeriods=2, Threshold=70.0,
                        ComparisonOperator="GreaterThanThreshold", AlarmActions=[arn],
                        Dimensions=[{"Name": "AutoScalingGroupName", "Value": g}])
    p = asg.describe_policies(AutoScalingGroupName=g)["ScalingPolicies"][0]
    assert [a["AlarmName"] for a in p.get("Alarms", [])] == [alarm]
    assert p["Alarms"][0]["AlarmARN"].endswith(f":alarm:{alarm}")


# --- v: EnableMetricsCollection without a list enables all ----------------------------------

def test_patch_v_metrics_collection_without_a_list_enables_every_metric(emu, ec2):
    asg = emu.client("autoscaling")
    subnet, lt = _template(ec2)
    g = _create(asg, subnet, lt)
    asg.enable_metrics_collection(AutoScalingGroupName=g, Granularity="1Minute")
    enabled = {m["Metric"] for m in _group(asg, g)["EnabledMetrics"]}
    assert {"GroupMinSize", "GroupInServiceInstances", "GroupTotalCapacity"} <= enabled
    assert len(enabled) >= 13
    asg.disable_metrics_collection(AutoScalingGroupName=g)
    assert not _group(asg, g).get("EnabledMetrics")


# --- x: lifecycle hooks at creation, with their own fields ----------------------------------

def test_patch_x_hooks_given_at_creation_exist_as_given(emu, ec2):
    asg = emu.client("autoscaling")
    subnet, lt = _template(ec2)
    g = _create(asg, subnet, lt, LifecycleHookSpecificationList=[{
        "LifecycleHookName": "bootstrap-gate",
        "LifecycleTransition": "autoscaling:EC2_INSTANCE_LAUNCHING",
        "HeartbeatTimeout": 300, "DefaultResult": "ABANDON",
        "NotificationMetadata": "wait-for-bootstrap"}])
    hooks = asg.describe_lifecycle_hooks(AutoScalingGroupName=g)["LifecycleHooks"]
    assert [(h["LifecycleHookName"], h["HeartbeatTimeout"], h["DefaultResult"],
             h.get("NotificationMetadata")) for h in hooks] == [
        ("bootstrap-gate", 300, "ABANDON", "wait-for-bootstrap")]
    # No made-up notification target or role.
    assert "RoleARN" not in hooks[0] and "NotificationTargetARN" not in hooks[0]


# --- y: notification configurations --------------------------------------------------------

def test_patch_y_notification_configurations(emu, ec2):
    asg = emu.client("autoscaling")
    subnet, lt = _template(ec2)
    g = _create(asg, subnet, lt)
    topic = "arn:aws:sns:us-east-1:123456789012:shop-ops"
    asg.put_notification_configuration(
        AutoScalingGroupName=g, TopicARN=topic,
        NotificationTypes=["autoscaling:EC2_INSTANCE_LAUNCH",
                           "autoscaling:EC2_INSTANCE_TERMINATE"])
    got = asg.describe_notification_configurations(
        AutoScalingGroupNames=[g])["NotificationConfigurations"]
    assert sorted((n["TopicARN"], n["NotificationType"]) for n in got) == [
        (topic, "autoscaling:EC2_INSTANCE_LAUNCH"), (topic, "autoscaling:EC2_INSTANCE_TERMINATE")]
    asg.delete_notification_configuration(AutoScalingGroupName=g, TopicARN=topic)
    assert not asg.describe_notification_configurations(
        AutoScalingGroupNames=[g])["NotificationConfigurations"]


# --- z: group settings moto drops ------------------------------------------------------------

def test_patch_z_group_settings_are_kept(emu, ec2):
    asg = emu.client("autoscaling")
    subnet, lt = _template(ec2)
    g = _create(asg, subnet, lt, MaxInstanceLifetime=604800, DefaultInstanceWarmup=120,
                InstanceMaintenancePolicy={"MinHealthyPercentage": 90,
                                           "MaxHealthyPercentage": 120},
                DesiredCapacityType="units", Context="shop")
    d = _group(asg, g)
    assert (d.get("MaxInstanceLifetime"), d.get("DefaultInstanceWarmup"),
            d.get("DesiredCapacityType"), d.get("Context")) == (604800, 120, "units", "shop")
    assert d.get("InstanceMaintenancePolicy") == {"MinHealthyPercentage": 90,
                                                  "MaxHealthyPercentage": 120}
    asg.update_auto_scaling_group(AutoScalingGroupName=g, MaxInstanceLifetime=86400)
    assert _group(asg, g)["MaxInstanceLifetime"] == 86400
