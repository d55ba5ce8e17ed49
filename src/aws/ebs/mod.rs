//! EBS direct APIs: read a snapshot into a local sparse file (cached per snapshot id) and write
//! a disk file back as a new snapshot, uploading only the 512 KiB blocks that differ from its
//! parent. Hashing and the changed-block decision are pure (`blocks`); the AWS calls carry them
//! out (`download`, `upload`, `wait`), with bounded concurrency and retries (`retry`).

pub mod blocks;
pub mod download;
pub mod retry;
pub mod upload;
pub mod wait;

pub use blocks::{
    blocks_to_upload, changed_blocks, hash_file_blocks, load_hashes, save_hashes, BlockHash,
    BLOCK_SIZE,
};
pub use download::{cached_download, download_snapshot, DownloadStats};
pub use upload::{upload_snapshot, upload_snapshot_with, UploadOptions, UploadStats};
pub use wait::wait_snapshot_completed;
