//! EBS direct APIs (placeholder while writing).
