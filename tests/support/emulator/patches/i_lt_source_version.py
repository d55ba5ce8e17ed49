"""Patch i: CreateLaunchTemplateVersion with SourceVersion inherits the source's data.

moto 5.2.5: SourceVersion is ignored: the new version holds only the LaunchTemplateData
fields of the request (e.g. just ImageId: no InstanceType, UserData, security groups...).
AWS: the new version starts from the source version's launch parameters and the parameters
given in LaunchTemplateData override the same top-level parameters of the source
("$Latest"/"$Default" or a number; an unknown version is
InvalidLaunchTemplateId.VersionNotFound).
Patch: wrap LaunchTemplate.create_version, fed the source version by a wrapper of
LaunchTemplates.create_launch_template_version (moto's response class for these calls).
"""

from __future__ import annotations

import copy
import threading

from moto.ec2.models.launch_templates import LaunchTemplate
from moto.ec2.responses.launch_templates import LaunchTemplates

from ._common import wrap

_pending = threading.local()


def _make_response(orig):
    def create_launch_template_version(self: LaunchTemplates):
        source = self._get_param("SourceVersion")
        source_data = None
        if source is not None:
            name = self._get_param("LaunchTemplateName")
            tid = self._get_param("LaunchTemplateId")
            template = (self.ec2_backend.get_launch_template(tid) if tid
                        else self.ec2_backend.get_launch_template_by_name(name))
            source_data = copy.deepcopy(template.get_version(source).data)
        _pending.source_data = source_data
        try:
            return orig(self)
        finally:
            _pending.source_data = None

    return create_launch_template_version


def _make_create_version(orig):
    def create_version(self: LaunchTemplate, data, description):
        source_data = getattr(_pending, "source_data", None)
        if source_data is not None:
            _pending.source_data = None
            merged = {k: v for k, v in source_data.items() if v is not None}
            merged.update({k: v for k, v in (data or {}).items() if v is not None})
            data = merged
        return orig(self, data, description)

    return create_version


def apply() -> None:
    wrap(LaunchTemplates, "create_launch_template_version", _make_response)
    wrap(LaunchTemplate, "create_version", _make_create_version)
