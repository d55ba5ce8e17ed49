"""Patches that make moto 5.2.5 behave like real AWS where bakery depends on it.

Each module fixes one documented moto gap and has an `apply()` function; serve.py calls
`apply_all()` before the server starts. Every patch is covered by a test in
../test_patches.py that fails on unpatched moto (BAKERY_EMULATOR_NO_PATCHES=1).
The table in docs/aws-emulator.md lists them: moto behaviour -> AWS behaviour -> patch.
"""

from __future__ import annotations

import importlib

import moto

EXPECTED_MOTO = "5.2.5"

# Order matters only where a patch wraps a method another one also wraps.
PATCHES = [
    "a_register_image_bdm",
    "b_register_image_tags",
    "c_ebs_block_size",
    "d_ebs_parent_snapshot",
    "e_ebs_snapshot_blocks",
    "f_ebs_changed_blocks",
    "g_copy_ebs_blocks",
    "h_copy_image_tags",
    "i_lt_source_version",
    "j_lt_user_data",
    "k_lt_delete_versions",
    "l_ebs_start_snapshot_volume",
    "m_ebs_put_block_checks",
    "n_terminated_targets",
    "o_asg_registers_at_launch",
    "p_asg_unknown_action",
    "q_target_health_control",
    "w_register_image_unique_name",
    "r_asg_classic_elb",
    "s_asg_tag_limit",
    "t_asg_per_group_names",
    "u_asg_policy_alarms",
    "v_asg_metrics_collection",
    "x_asg_lifecycle_hooks",
    "y_asg_notifications",
    "z_asg_group_settings",
    "aa_cloudwatch_metric_identity",
]


def apply_all() -> list[str]:
    if moto.__version__ != EXPECTED_MOTO:
        raise RuntimeError(
            f"emulator patches are written for moto {EXPECTED_MOTO}, found {moto.__version__}: "
            "re-check every patch before bumping requirements.txt"
        )
    applied = []
    for name in PATCHES:
        importlib.import_module(f"{__name__}.{name}").apply()
        applied.append(name.split("_", 1)[0])
    return applied
