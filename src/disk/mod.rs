//! Disk images: partition tables and filesystems, formats, sparse copies.

pub mod grow;
pub mod image;
pub mod layout;
