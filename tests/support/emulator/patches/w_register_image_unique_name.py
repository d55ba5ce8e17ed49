"""Patch w: RegisterImage refuses a name the account already uses in the region.

moto 5.2.5: RegisterImage accepts any name, so two images of one account and region can share
a name (two bakes racing to register the same AMI name would both succeed).
AWS: AMI names are unique per account and region; a second RegisterImage with a name in use
fails with InvalidAMIName.Duplicate ("AMI name NAME is already in use by AMI ami-...") and
creates nothing. A deregistered image's name is free again.
Patch: wrap AmisResponse.register_image (outermost, so it runs before the other wrappers make
anything); look for an image of this account with that name that is not deregistered.
"""

from __future__ import annotations

import threading

from moto.ec2.exceptions import EC2ClientError
from moto.ec2.responses.amis import AmisResponse

from ._common import wrap


class InvalidAMINameDuplicate(EC2ClientError):
    def __init__(self, name: str, ami_id: str):
        super().__init__("InvalidAMIName.Duplicate", f"AMI name {name} is already in use by AMI {ami_id}")


# The server is threaded: the check and the registration must be one step, as on AWS.
_LOCK = threading.Lock()


def _make(orig):
    def register_image(self: AmisResponse):
        name = self._get_param("Name")
        with _LOCK:
            if name:
                for ami in list(self.ec2_backend.amis.values()):
                    if ami.name == name and ami.owner_id == self.ec2_backend.account_id \
                            and getattr(ami, "state", "") != "deregistered":
                        raise InvalidAMINameDuplicate(name, ami.id)
            return orig(self)

    return register_image


def apply() -> None:
    wrap(AmisResponse, "register_image", _make)
