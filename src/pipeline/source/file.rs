//! Source: a raw or qcow2 base image file, copied (reflink or sparse copy) or converted into
//! the disk the bake works on; the base file itself is never touched.

use std::path::Path;

use anyhow::Result;

use super::{file_stem, BaseOrigin, From, SourceDisk};
use crate::disk::image::{self, Format};
use crate::pipeline::Stages;

/// Copy `base` into `disk` (stage `copy base`).
pub fn open(base: &Path, disk: &Path, stages: &mut Stages) -> Result<SourceDisk> {
    let format = image::detect_format(base)?;
    stages.run("copy base", |_| match format {
        Format::Raw => image::copy_sparse(base, disk).map(|_| ()),
        Format::Qcow2 => image::convert(base, Format::Qcow2, disk, Format::Raw),
    })?;
    Ok(SourceDisk {
        path: disk.to_path_buf(),
        origin: origin_of(base, format),
        root_partition: None,
        bootstrap: None,
        from: From::Local,
    })
}

/// What a base file says of itself before the session reads its record.
pub fn origin(base: &Path) -> Result<BaseOrigin> {
    Ok(origin_of(base, image::detect_format(base)?))
}

fn origin_of(base: &Path, format: Format) -> BaseOrigin {
    BaseOrigin {
        image: base.display().to_string(),
        name: None,
        fallback_name: file_stem(base),
        version: None,
        format: Some(format),
    }
}
