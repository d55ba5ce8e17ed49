//! Placeholder until the AWS EC2 helper writes this module.
