"""Patch a: RegisterImage honours BlockDeviceMappings (and the image attributes given).

moto 5.2.5: RegisterImage reads only Name and Description. It invents a fresh, empty 15 GiB
root snapshot for every image and reports it as the only mapping (/dev/sda1, standard), with
architecture/virtualization/boot mode left unset or at moto's own defaults.
AWS: the image's mappings are exactly the BlockDeviceMappings given; the root device
(RootDeviceName) uses the snapshot you name, with its VolumeSize (default: the snapshot's
size), VolumeType, DeleteOnTermination (default true) and Encrypted (the snapshot's); other
mappings (more EBS volumes, ephemeral VirtualName, NoDevice) are kept as given; an unknown
snapshot is InvalidSnapshot.NotFound. RootDeviceType is "ebs". Architecture defaults to i386,
VirtualizationType to paravirtual; EnaSupport, BootMode, ImdsSupport, TpmSupport,
SriovNetSupport are reported as given (absent when not given).
Patch: wrap AmisResponse.register_image; after moto made the Ami, store the real mappings on it
(_common.set_block_device_mappings) and set the attributes.
"""

from __future__ import annotations

from typing import Any

from moto.ec2.exceptions import InvalidParameterValue, InvalidSnapshotIdError
from moto.ec2.responses.amis import AmisResponse

from ._common import set_block_device_mappings, truthy, wrap

ATTRS = {
    "EnaSupport": "ena_support",
    "BootMode": "boot_mode",
    "ImdsSupport": "imds_support",
    "TpmSupport": "tpm_support",
    "SriovNetSupport": "sriov_net_support",
    "KernelId": "kernel_id",
    "RamdiskId": "ramdisk_id",
}


def _normalise(self: AmisResponse, mappings: list[dict[str, Any]]):
    backend = self.ec2_backend
    out = []
    for m in mappings:
        m = dict(m)
        ebs = m.get("Ebs")
        if ebs is not None:
            ebs = dict(ebs)
            sid = ebs.get("SnapshotId")
            if sid:
                if sid not in backend.snapshots:
                    raise InvalidSnapshotIdError()
                snap = backend.snapshots[sid]
                ebs.setdefault("VolumeSize", snap.volume.size)
                ebs.setdefault("Encrypted", bool(snap.encrypted))
            elif "VolumeSize" not in ebs:
                raise InvalidParameterValue(
                    f"Volume size must be specified for device {m.get('DeviceName')}")
            ebs["DeleteOnTermination"] = truthy(ebs.get("DeleteOnTermination", True))
            ebs.setdefault("VolumeType", "gp2")
            if "VolumeSize" in ebs:
                ebs["VolumeSize"] = int(ebs["VolumeSize"])
            m["Ebs"] = ebs
        out.append(m)
    return out


def _make(orig):
    def register_image(self: AmisResponse):
        mappings = self._get_param("BlockDeviceMappings", []) or []
        root_name = self._get_param("RootDeviceName")
        bdms = _normalise(self, mappings) if mappings else None  # validate before creating
        result = orig(self)
        ami = self.ec2_backend.amis[result.result["ImageId"]]

        ami.architecture = self._get_param("Architecture") or "i386"
        ami.virtualization_type = self._get_param("VirtualizationType") or "paravirtual"
        ami.boot_mode = None  # moto defaults to "uefi"; AWS reports only what was given
        for param, attr in ATTRS.items():
            value = self._get_param(param)
            if value is not None:
                setattr(ami, attr, value)
        if bdms:
            if root_name is None:
                root_name = next((m["DeviceName"] for m in bdms if m.get("Ebs")), None)
            ami.root_device_name = root_name
            ami.root_device_type = "ebs"
            root = next((m for m in bdms if m.get("DeviceName") == root_name), None)
            root_sid = ((root or {}).get("Ebs") or {}).get("SnapshotId")
            root_snap = self.ec2_backend.snapshots.get(root_sid) if root_sid else None
            set_block_device_mappings(ami, bdms, root_snap)
        elif root_name:
            ami.root_device_name = root_name
        return result

    return register_image


def apply() -> None:
    wrap(AmisResponse, "register_image", _make)
