"""Patch p: an Auto Scaling action moto lacks is a clean 400 InvalidAction, not a 500.

moto 5.2.5: StartInstanceRefresh, DescribeInstanceRefreshes, CancelInstanceRefresh,
RollbackInstanceRefresh (and other unimplemented actions) raise NotImplementedError: HTTP 500,
which SDKs retry as a server fault before giving up.
AWS: an endpoint without an action answers HTTP 400 `InvalidAction` ("The action or operation
requested is invalid"), which clients do not retry. The emulator stands for such an endpoint:
bakery's rolling deploy then uses its own batch loop (the path the deploy tests exercise).
Patch: give AutoScalingResponse a handler for each instance-refresh action that raises
InvalidAction (moto serializes it like any service error).
"""

from __future__ import annotations

from moto.autoscaling.responses import AutoScalingResponse
from moto.core.exceptions import ServiceException


class InvalidAction(ServiceException):
    code = "InvalidAction"


ACTIONS = ("start_instance_refresh", "describe_instance_refreshes", "cancel_instance_refresh",
           "rollback_instance_refresh")


def _handler(action: str):
    def handler(self):
        raise InvalidAction(f"The action {action} is not valid for this endpoint.")

    return handler


def apply() -> None:
    for name in ACTIONS:
        if not hasattr(AutoScalingResponse, name):
            action = "".join(w.capitalize() for w in name.split("_"))
            setattr(AutoScalingResponse, name, _handler(action))
