"""Patch s: an Auto Scaling group holds at most 50 tags.

moto 5.2.5: any number of tags (CreateAutoScalingGroup, CreateOrUpdateTags).
AWS: 50 tags per Auto Scaling group ("Tag your Auto Scaling groups": "You can add up to 50 tags
to each Auto Scaling group"; tags whose key starts with `aws:` are AWS's and do not count). A
request that would go over is refused with `LimitExceeded` and changes nothing.
Patch: wrap the backend's create_auto_scaling_group and create_or_update_tags; count the
distinct user keys the group would have, refuse before anything changes.
"""

from __future__ import annotations

from moto.autoscaling.exceptions import AutoscalingClientError
from moto.autoscaling.models import AutoScalingBackend

LIMIT = 50


class LimitExceeded(AutoscalingClientError):
    code = "LimitExceeded"


def _user_keys(tags):
    return {t["Key"] for t in tags if not str(t.get("Key", "")).startswith("aws:")}


def _check(group: str, keys: set) -> None:
    if len(keys) > LIMIT:
        raise LimitExceeded(
            f"The number of tags of Auto Scaling group {group} would be {len(keys)}; "
            f"an Auto Scaling group can have at most {LIMIT} tags.")


def apply() -> None:
    orig_create = AutoScalingBackend.create_auto_scaling_group
    orig_tags = AutoScalingBackend.create_or_update_tags

    def create_auto_scaling_group(self, name, *args, **kwargs):
        tags = kwargs.get("tags") or []
        _check(name, _user_keys(tags))
        return orig_create(self, name, *args, **kwargs)

    def create_or_update_tags(self, tags):
        by_group: dict[str, set] = {}
        for t in tags:
            g = t["ResourceId"]
            if g not in by_group:
                group = self.autoscaling_groups.get(g)
                by_group[g] = _user_keys(group.tags) if group is not None else set()
            by_group[g] |= _user_keys([t])
        for g, keys in by_group.items():
            _check(g, keys)
        return orig_tags(self, tags)

    AutoScalingBackend.create_auto_scaling_group = create_auto_scaling_group
    AutoScalingBackend.create_or_update_tags = create_or_update_tags
