"""Patch k: DeleteLaunchTemplateVersions exists.

moto 5.2.5: the action is not implemented (error "not yet implemented" / HTTP 500).
AWS: deletes the listed versions (numbers) of one launch template (LaunchTemplateId or
LaunchTemplateName); each version lands in SuccessfullyDeletedLaunchTemplateVersions or in
UnsuccessfullyDeletedLaunchTemplateVersions with a ResponseError (launchTemplateVersionDoesNotExist
for an unknown version; the default version can't be deleted). Version numbers are never
reused, and a deleted version can no longer be described or used.
Patch: add LaunchTemplates.delete_launch_template_versions, and make LaunchTemplate look
versions up by number (moto indexes its list by number - 1, which breaks once one is gone).
"""

from __future__ import annotations

from moto.core.responses import ActionResult
from moto.ec2.exceptions import InvalidLaunchTemplateVersionNotFound
from moto.ec2.models.launch_templates import LaunchTemplate, LaunchTemplateVersion
from moto.ec2.responses.launch_templates import LaunchTemplates

from ._common import wrap


def get_version(self: LaunchTemplate, num) -> LaunchTemplateVersion:
    if str(num).lower() == "$latest":
        return self.versions[-1]
    if str(num).lower() == "$default":
        return self.default_version()
    for v in self.versions:
        if str(v.number) == str(num):
            return v
    raise InvalidLaunchTemplateVersionNotFound(template_id=self.id, version=num)


def default_version(self: LaunchTemplate) -> LaunchTemplateVersion:
    return self.get_version(self.default_version_number)


def _make_create_version(orig):
    def create_version(self: LaunchTemplate, data, description):
        # moto numbers a new version len(versions) + 1; after a deletion that would reuse a number.
        nxt = max([v.number for v in self.versions] + [getattr(self, "_bakery_max", 0)]) + 1
        version = orig(self, data, description)  # other patches (i) wrap this too
        version.number = nxt
        self._bakery_max = nxt
        return version

    return create_version


def delete_launch_template_versions(self: LaunchTemplates) -> ActionResult:
    name = self._get_param("LaunchTemplateName")
    tid = self._get_param("LaunchTemplateId")
    numbers = self._get_param("Versions", []) or []
    self.error_on_dryrun()
    template = (self.ec2_backend.get_launch_template(tid) if tid
                else self.ec2_backend.get_launch_template_by_name(name))
    ok, failed = [], []
    for raw in numbers:
        base = {"LaunchTemplateId": template.id, "LaunchTemplateName": template.name}
        match = [v for v in template.versions if str(v.number) == str(raw)]
        if not match:
            failed.append({**base, "VersionNumber": int(raw) if str(raw).isdigit() else 0,
                           "ResponseError": {"Code": "launchTemplateVersionDoesNotExist",
                                             "Message": "The specified launch template version "
                                                        "does not exist."}})
            continue
        v = match[0]
        if template.is_default(v):
            failed.append({**base, "VersionNumber": v.number,
                           "ResponseError": {"Code": "unexpectedError",
                                             "Message": "Cannot delete the default version of "
                                                        "a launch template."}})
            continue
        template._bakery_max = max(getattr(template, "_bakery_max", 0),
                                   max(x.number for x in template.versions))
        template.versions.remove(v)
        ok.append({**base, "VersionNumber": v.number})
    return ActionResult({
        "SuccessfullyDeletedLaunchTemplateVersions": ok,
        "UnsuccessfullyDeletedLaunchTemplateVersions": failed,
    })


def apply() -> None:
    LaunchTemplate.get_version = get_version
    LaunchTemplate.default_version = default_version
    wrap(LaunchTemplate, "create_version", _make_create_version)
    LaunchTemplates.delete_launch_template_versions = delete_launch_template_versions
