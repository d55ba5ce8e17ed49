//! One place that makes AWS clients: the standard credential chain and config (`AWS_PROFILE`,
//! `AWS_REGION`, `AWS_ENDPOINT_URL` for emulators), one client per region, standard retries with
//! backoff and jitter for throttling, and a test-only fault hook.

use std::time::Duration;

use anyhow::Result;
use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};

use crate::input;

#[derive(Clone, Debug)]
pub struct AwsContext {
    base: SdkConfig,
}

/// `AwsContext::NAME(region)`: a client of SDK crate `$sdk` for `region`, from the shared
/// config (credentials, endpoint, retries), with the test-only fault hook when it is asked for.
macro_rules! client {
    ($name:ident, $sdk:ident) => {
        pub fn $name(&self, region: &str) -> $sdk::Client {
            let conf =
                $sdk::config::Builder::from(&self.base).region(Region::new(region.to_string()));
            let conf = match fault::FaultHook::from_env() {
                Some(h) => conf.interceptor(h).build(),
                None => conf.build(),
            };
            $sdk::Client::from_conf(conf)
        }
    };
}

impl AwsContext {
    pub async fn load() -> AwsContext {
        let base = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(MAX_ATTEMPTS)
                    .with_initial_backoff(Duration::from_millis(200)),
            )
            .load()
            .await;
        AwsContext { base }
    }

    /// Fail early, as an input error, when no credentials can be found: every later message would
    /// otherwise be about an endpoint that cannot be reached.
    pub async fn require_credentials(&self) -> Result<()> {
        use aws_sdk_ec2::config::ProvideCredentials;
        let Some(p) = self.base.credentials_provider() else {
            return Err(input!(
                "no AWS credentials: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
            ));
        };
        p.provide_credentials().await.map(|_| ()).map_err(|e| {
            // CredentialsNotLoaded: no provider of the chain had any.
            if matches!(e, aws_credential_types::provider::error::CredentialsError::CredentialsNotLoaded(_)) {
                input!("no AWS credentials found (tried the environment, the profile, web identity, ECS and instance metadata); set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY")
            } else {
                let why = std::error::Error::source(&e).map(|s| format!(": {s}")).unwrap_or_default();
                input!("cannot load AWS credentials ({e}{why}); check AWS_PROFILE and the files in ~/.aws")
            }
        })
    }

    /// The region from the flag, else the environment/profile; an input error when neither says.
    pub fn region(&self, flag: Option<&str>) -> Result<String> {
        if let Some(r) = flag {
            return Ok(r.to_string());
        }
        self.base.region().map(|r| r.to_string()).ok_or_else(|| {
            input!(
                "no AWS region: pass --region or set AWS_REGION (or a region in your AWS profile)"
            )
        })
    }

    client!(ec2, aws_sdk_ec2);
    client!(ebs, aws_sdk_ebs);
    client!(autoscaling, aws_sdk_autoscaling);
    client!(elbv2, aws_sdk_elasticloadbalancingv2);
    client!(kms, aws_sdk_kms);

    pub fn sdk_config(&self) -> &SdkConfig {
        &self.base
    }
}

/// Test-only fault injection: `BAKERY_FAIL_API=Operation[,Operation...]` makes those API calls
/// fail before they are sent, as if AWS had returned an error; `BAKERY_THROTTLE_API=Operation,...`
/// sends them and replaces every answer with AWS's throttling error, so retries run for real. Compiled in always (it is an
/// interceptor that does nothing unless the variable is set) so the shipped binary is the one
/// tested. Every call is also a fault point named `api:Operation` (see `crate::fault`): listed in
/// `BAKERY_FAULT_LOG`, and failed by `BAKERY_FAIL_AT=api:Operation`.
pub mod fault {
    use aws_smithy_runtime_api::box_error::BoxError;
    use aws_smithy_runtime_api::client::interceptors::context::{
        BeforeDeserializationInterceptorContextMut, BeforeSerializationInterceptorContextRef,
    };
    use aws_smithy_runtime_api::client::interceptors::Intercept;
    use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::config_bag::ConfigBag;

    #[derive(Debug)]
    pub struct FaultHook {
        /// Fail these operations before they are sent (`BAKERY_FAIL_API`).
        pub ops: Vec<String>,
        /// Send these, then answer as AWS does when it throttles (`BAKERY_THROTTLE_API`), so the
        /// SDK's retries with backoff run for real.
        pub throttle: Vec<String>,
        /// Also pass `crate::fault::point("api:Operation")` for every call.
        pub points: bool,
    }

    fn list(var: &str) -> Vec<String> {
        std::env::var(var)
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    }

    impl FaultHook {
        pub fn from_env() -> Option<FaultHook> {
            let (ops, throttle) = (list("BAKERY_FAIL_API"), list("BAKERY_THROTTLE_API"));
            let points = std::env::var_os(crate::fault::LOG).is_some()
                || std::env::var(crate::fault::FAIL_AT).is_ok_and(|a| a.starts_with("api:"));
            (!ops.is_empty() || !throttle.is_empty() || points).then_some(FaultHook {
                ops,
                throttle,
                points,
            })
        }
    }

    fn metadata(cfg: &ConfigBag) -> (String, String) {
        cfg.load::<aws_smithy_runtime_api::client::orchestrator::Metadata>()
            .map(|m| (m.service().to_string(), m.name().to_string()))
            .unwrap_or_default()
    }

    impl Intercept for FaultHook {
        fn name(&self) -> &'static str {
            "BakeryFaultHook"
        }

        fn read_before_serialization(
            &self,
            _ctx: &BeforeSerializationInterceptorContextRef<'_>,
            _rc: &RuntimeComponents,
            cfg: &mut ConfigBag,
        ) -> Result<(), BoxError> {
            let (_, op) = metadata(cfg);
            if self.ops.iter().any(|o| o == &op) {
                return Err(format!("injected failure of {op} (BAKERY_FAIL_API)").into());
            }
            if self.points {
                crate::fault::point(&format!("api:{op}")).map_err(|e| e.to_string())?;
            }
            Ok(())
        }

        fn modify_before_deserialization(
            &self,
            ctx: &mut BeforeDeserializationInterceptorContextMut<'_>,
            _rc: &RuntimeComponents,
            cfg: &mut ConfigBag,
        ) -> Result<(), BoxError> {
            let (service, op) = metadata(cfg);
            if !self.throttle.iter().any(|o| o == &op) {
                return Ok(());
            }
            tracing::warn!("injected throttling of {op} (BAKERY_THROTTLE_API)");
            let resp = ctx.response_mut();
            *resp.status_mut() = StatusCode::try_from(if service == "EC2" { 503 } else { 400 })
                .expect("valid status");
            let body = match service.as_str() {
                "EC2" => "<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors><RequestID>bakery-injected</RequestID></Response>".to_string(),
                "EBS" => {
                    resp.headers_mut().insert("x-amzn-errortype", "ThrottlingException");
                    resp.headers_mut().insert("content-type", "application/json");
                    r#"{"message":"Rate exceeded"}"#.to_string()
                }
                _ => "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>bakery-injected</RequestId></ErrorResponse>".to_string(),
            };
            *resp.body_mut() = SdkBody::from(body);
            Ok(())
        }
    }
}

/// One line for an SDK error: the service's code and message when there is one.
pub fn describe_sdk_error<E, R>(e: &aws_sdk_ec2::error::SdkError<E, R>) -> String
where
    E: aws_sdk_ec2::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    use aws_sdk_ec2::error::SdkError;
    match e {
        SdkError::ServiceError(se) => {
            let err = se.err();
            let text = match (err.code(), err.message()) {
                (Some(c), Some(m)) => format!("{c}: {m}"),
                (Some(c), None) => c.to_string(),
                _ => format!("{err}"),
            };
            if err.code().is_some_and(is_throttling_code) {
                format!("{text} (AWS throttled the call and {MAX_ATTEMPTS} attempts with backoff did not get through; try again later, or run fewer bakes at once)")
            } else {
                text
            }
        }
        SdkError::DispatchFailure(d) => {
            let chain = source_chain(e);
            if chain.contains("credentials") || chain.contains("identity") {
                format!("no AWS credentials ({chain}); set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY")
            } else {
                let why = if d.is_io() {
                    "connection failed"
                } else if d.is_timeout() {
                    "timed out"
                } else {
                    "dispatch failure"
                };
                let endpoint = std::env::var("AWS_ENDPOINT_URL")
                    .map(|u| format!(" {u}"))
                    .unwrap_or_default();
                format!("cannot reach the AWS endpoint{endpoint} ({why}); check the network, the region and AWS_ENDPOINT_URL")
            }
        }
        SdkError::TimeoutError(_) => "the AWS call timed out".into(),
        SdkError::ConstructionFailure(_) => {
            // The whole chain: an interceptor's error says only that it failed, its source why.
            let mut parts = Vec::new();
            let mut next = std::error::Error::source(e);
            while let Some(x) = next {
                parts.push(x.to_string());
                next = x.source();
            }
            let src = parts.join(": ");
            if src.contains("credentials") {
                format!("no AWS credentials: {src}; set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY")
            } else {
                format!("request could not be built: {src}")
            }
        }
        other => {
            let mut s = other.to_string();
            let mut src = std::error::Error::source(other);
            while let Some(x) = src {
                s.push_str(": ");
                s.push_str(&x.to_string());
                src = x.source();
            }
            s
        }
    }
}

/// Every attempt of a call, the first included (standard retry mode).
pub const MAX_ATTEMPTS: u32 = 6;

/// The error codes AWS answers with when it throttles (what the SDK's retry classifier retries).
pub fn is_throttling_code(code: &str) -> bool {
    matches!(
        code,
        "Throttling"
            | "ThrottlingException"
            | "ThrottledException"
            | "RequestThrottledException"
            | "TooManyRequestsException"
            | "RequestLimitExceeded"
            | "RequestThrottled"
            | "SlowDown"
            | "EC2ThrottledException"
    )
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut src = e.source();
    while let Some(x) = src {
        parts.push(x.to_string());
        src = x.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_fault_hook_fails_the_named_operation_before_it_is_sent() {
        // Nothing listens on port 9: a call that got past the hook would fail differently.
        let base = aws_config::SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url("http://127.0.0.1:9")
            .region(Region::new("us-east-1"))
            .credentials_provider(aws_sdk_ec2::config::SharedCredentialsProvider::new(
                aws_sdk_ec2::config::Credentials::new("a", "b", None, None, "test"),
            ))
            .build();
        let conf = aws_sdk_ec2::config::Builder::from(&base)
            .interceptor(fault::FaultHook {
                ops: vec!["CopyImage".into()],
                throttle: vec![],
                points: false,
            })
            .build();
        let ec2 = aws_sdk_ec2::Client::from_conf(conf);
        let e = ec2
            .copy_image()
            .name("x")
            .source_image_id("ami-1")
            .source_region("us-east-1")
            .send()
            .await
            .unwrap_err();
        let msg = format!(
            "{}",
            aws_smithy_types::error::display::DisplayErrorContext(&e)
        );
        assert!(msg.contains("injected failure of CopyImage"), "{msg}");
        let e = ec2.describe_images().send().await.unwrap_err();
        let msg = format!(
            "{}",
            aws_smithy_types::error::display::DisplayErrorContext(&e)
        );
        assert!(!msg.contains("injected"), "{msg}");
    }
}
