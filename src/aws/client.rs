//! One place that makes AWS clients: the standard credential chain and config (`AWS_PROFILE`,
//! `AWS_REGION`, `AWS_ENDPOINT_URL` for emulators), one client per region, and for every client
//! the same bounds on a call: connect, read, attempt and operation timeouts ([`Timeouts`]), and
//! the SDK's standard retries (exponential backoff with full jitter, [`MAX_ATTEMPTS`] attempts)
//! for throttling, 5xx, dropped connections and timed-out attempts, each retry said on stderr
//! ([`retry_log::RetryLog`]). Plus a test-only fault hook.

use std::time::Duration;

use anyhow::Result;
use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_smithy_types::timeout::TimeoutConfig;

use crate::input;

#[derive(Clone, Debug)]
pub struct AwsContext {
    base: SdkConfig,
    /// A `BAKERY_AWS_*_TIMEOUT` that does not parse: reported by [`AwsContext::require_credentials`].
    config_error: Option<String>,
    /// An endpoint that wins over the environment's (`AWS_ENDPOINT_URL` is read per service).
    endpoint: Option<String>,
}

/// How long one AWS call may take. Defaults suit a CI runner far from the region; each can be
/// changed with an environment variable in seconds (fractions allowed), which is also how the
/// tests make a stalled call fail in a second.
///
/// - `connect` (`BAKERY_AWS_CONNECT_TIMEOUT`, 10 s): TCP + TLS handshake.
/// - `read` (`BAKERY_AWS_READ_TIMEOUT`, 90 s): from the start of the request (its body included:
///   64 blocks of 512 KiB share the uplink) to the first byte of the answer; a PutSnapshotBlock
///   that is never answered ends here (coldsnap#437).
/// - `attempt` (`BAKERY_AWS_ATTEMPT_TIMEOUT`, 180 s): one attempt. A timed-out attempt is retried
///   like a throttled one.
/// - `operation` (`BAKERY_AWS_OPERATION_TIMEOUT`, 900 s): every attempt and backoff of one call.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timeouts {
    pub connect: Duration,
    pub read: Duration,
    pub attempt: Duration,
    pub operation: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(10),
            read: Duration::from_secs(90),
            attempt: Duration::from_secs(180),
            operation: Duration::from_secs(900),
        }
    }
}

impl Timeouts {
    pub const VARS: [&'static str; 4] = [
        "BAKERY_AWS_CONNECT_TIMEOUT",
        "BAKERY_AWS_READ_TIMEOUT",
        "BAKERY_AWS_ATTEMPT_TIMEOUT",
        "BAKERY_AWS_OPERATION_TIMEOUT",
    ];

    /// The defaults, overridden by the variables `lookup` knows. Err names the variable.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Timeouts, String> {
        let mut t = Timeouts::default();
        for (var, slot) in Self::VARS.iter().zip([
            &mut t.connect,
            &mut t.read,
            &mut t.attempt,
            &mut t.operation,
        ]) {
            let Some(v) = lookup(var) else { continue };
            let secs: f64 = v
                .trim()
                .parse()
                .map_err(|_| format!("{var}={v}: not a number of seconds (e.g. 30 or 0.5)"))?;
            if !(secs > 0.0 && secs <= 86_400.0) {
                return Err(format!(
                    "{var}={v}: give a number of seconds above 0 and at most 86400"
                ));
            }
            *slot = Duration::from_secs_f64(secs);
        }
        Ok(t)
    }

    pub fn from_env() -> Result<Timeouts, String> {
        Self::from_lookup(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    pub fn config(&self) -> TimeoutConfig {
        TimeoutConfig::builder()
            .connect_timeout(self.connect)
            .read_timeout(self.read)
            .operation_attempt_timeout(self.attempt)
            .operation_timeout(self.operation)
            .build()
    }
}

/// `AwsContext::NAME(region)`: a client of SDK crate `$sdk` for `region`, from the shared
/// config (credentials, endpoint, timeouts, retries), saying each retry on stderr, with the
/// test-only fault hook when it is asked for.
macro_rules! client {
    ($name:ident, $sdk:ident) => {
        pub fn $name(&self, region: &str) -> $sdk::Client {
            let mut conf = $sdk::config::Builder::from(&self.base)
                .region(Region::new(region.to_string()))
                .interceptor(retry_log::RetryLog::new(region));
            if let Some(url) = &self.endpoint {
                conf = conf.endpoint_url(url);
            }
            let conf = match fault::FaultHook::from_env() {
                Some(h) => conf.interceptor(h).build(),
                None => conf.build(),
            };
            $sdk::Client::from_conf(conf)
        }
    };
}

/// `AWS_PROFILE` when it names a profile that neither the config nor the credentials file
/// defines (read with the SDK's own loader, honouring `AWS_CONFIG_FILE` and
/// `AWS_SHARED_CREDENTIALS_FILE`), with the files looked in. The SDK itself then falls through to
/// the next credential source and reports only "no credentials".
async fn missing_profile() -> Option<(String, String)> {
    use aws_types::os_shim_internal::{Env, Fs};
    let name = std::env::var("AWS_PROFILE")
        .ok()
        .filter(|p| !p.is_empty())?;
    // The default files: ~/.aws/config and ~/.aws/credentials, or their environment overrides.
    let set = aws_config::profile::load(&Fs::real(), &Env::real(), &Default::default(), None)
        .await
        .ok()?;
    if set.get_profile(&name).is_some() {
        return None;
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "~".into());
    let config = std::env::var("AWS_CONFIG_FILE").unwrap_or_else(|_| format!("{home}/.aws/config"));
    let creds = std::env::var("AWS_SHARED_CREDENTIALS_FILE")
        .unwrap_or_else(|_| format!("{home}/.aws/credentials"));
    Some((name, format!("{config} or {creds}")))
}

impl AwsContext {
    pub async fn load() -> AwsContext {
        let (timeouts, config_error) = match Timeouts::from_env() {
            Ok(t) => (t, None),
            Err(e) => (Timeouts::default(), Some(e)),
        };
        let base = aws_config::defaults(BehaviorVersion::latest())
            .http_client(super::https::client())
            .retry_config(retry_config())
            .timeout_config(timeouts.config())
            .load()
            .await;
        AwsContext {
            base,
            config_error,
            endpoint: None,
        }
    }

    /// The same context with other timeouts (tests, and callers that know a call is slow).
    pub fn with_timeouts(&self, t: Timeouts) -> AwsContext {
        AwsContext {
            base: self.base.to_builder().timeout_config(t.config()).build(),
            ..self.clone()
        }
    }

    /// The same context talking to another endpoint (a test's fault proxy in front of the emulator).
    pub fn with_endpoint(&self, url: &str) -> AwsContext {
        AwsContext {
            endpoint: Some(url.to_string()),
            ..self.clone()
        }
    }

    /// The timeouts every client of this context has.
    pub fn timeouts(&self) -> Option<TimeoutConfig> {
        self.base.timeout_config().cloned()
    }

    /// Fail early, as an input error, when no credentials can be found (every later message would
    /// otherwise be about an endpoint that cannot be reached), or a `BAKERY_AWS_*_TIMEOUT` is not
    /// a number of seconds.
    pub async fn require_credentials(&self) -> Result<()> {
        use aws_sdk_ec2::config::ProvideCredentials;
        if let Some(e) = &self.config_error {
            return Err(input!("{e}"));
        }
        let Some(p) = self.base.credentials_provider() else {
            return Err(input!(
                "no AWS credentials: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
            ));
        };
        let missing = missing_profile().await;
        p.provide_credentials().await.map(|_| ()).map_err(|e| {
            if let Some((name, files)) = &missing {
                return input!("AWS profile `{name}` (AWS_PROFILE) does not exist in {files}; pick one of `aws configure list-profiles`, or unset AWS_PROFILE");
            }
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
    // Classic Load Balancers.
    client!(elb, aws_sdk_elasticloadbalancing);
    client!(cloudwatch, aws_sdk_cloudwatch);
    client!(kms, aws_sdk_kms);

    pub fn sdk_config(&self) -> &SdkConfig {
        &self.base
    }
}

/// Standard retries: [`MAX_ATTEMPTS`] attempts, exponential backoff from 200 ms with full jitter
/// (capped at 20 s), for throttling, 5xx, transient network errors and timed-out attempts.
pub fn retry_config() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(MAX_ATTEMPTS)
        .with_initial_backoff(Duration::from_millis(200))
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

/// Every retry the SDK makes is said on stderr: which call, in which region, which attempt, and
/// why the previous one failed (the service's error code and HTTP status, or "no answer within
/// the attempt timeout"). Repeats of the same line are rate-limited (64 blocks throttled at once
/// say each attempt once).
pub mod retry_log {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    use aws_smithy_runtime_api::box_error::BoxError;
    use aws_smithy_runtime_api::client::interceptors::context::{
        BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextRef,
    };
    use aws_smithy_runtime_api::client::interceptors::Intercept;
    use aws_smithy_runtime_api::client::retries::RequestAttempts;
    use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
    use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};

    #[derive(Debug)]
    pub struct RetryLog {
        region: String,
    }

    impl RetryLog {
        pub fn new(region: &str) -> RetryLog {
            RetryLog {
                region: region.to_string(),
            }
        }
    }

    /// Why the last attempt of this call failed (kept between attempts in the call's config bag).
    #[derive(Debug, Clone)]
    struct LastFailure(String);

    impl Storable for LastFailure {
        type Storer = StoreReplace<Self>;
    }

    /// The error code of a failed answer: the `x-amzn-errortype` header (REST-JSON: EBS), a
    /// JSON `__type`/`code`, or the XML `<Code>` (query and EC2 protocols). Only for saying why.
    pub fn error_code(errortype_header: Option<&str>, body: &[u8]) -> Option<String> {
        if let Some(h) = errortype_header.filter(|h| !h.is_empty()) {
            return Some(h.split(':').next().unwrap_or(h).to_string());
        }
        let text = std::str::from_utf8(body).ok()?;
        if let Some(start) = text.find("<Code>") {
            let rest = &text[start + 6..];
            return rest
                .find("</Code>")
                .map(|end| rest[..end].trim().to_string());
        }
        let v: serde_json::Value = serde_json::from_str(text).ok()?;
        ["__type", "code", "Code"]
            .iter()
            .find_map(|k| v.get(*k).and_then(|c| c.as_str()))
            .map(|c| c.rsplit('#').next().unwrap_or(c).to_string())
    }

    /// Log `line` unless the same `key` was logged in the last 5 s (then count it, and say the
    /// count with the next line that goes out).
    pub fn say(key: &str, line: &str) {
        static SEEN: Mutex<Option<HashMap<String, (Instant, u32)>>> = Mutex::new(None);
        let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
        let map = seen.get_or_insert_with(HashMap::new);
        let now = Instant::now();
        match map.get_mut(key) {
            Some((at, skipped)) if now.duration_since(*at) < Duration::from_secs(5) => {
                *skipped += 1;
            }
            entry => {
                let skipped = entry.map(|(_, s)| *s).unwrap_or(0);
                let more = if skipped > 0 {
                    format!(" (and {skipped} more like it)")
                } else {
                    String::new()
                };
                tracing::warn!("{line}{more}");
                map.insert(key.to_string(), (now, 0));
            }
        }
    }

    fn operation(cfg: &ConfigBag) -> (String, String) {
        cfg.load::<aws_smithy_runtime_api::client::orchestrator::Metadata>()
            .map(|m| (m.service().to_string(), m.name().to_string()))
            .unwrap_or_default()
    }

    impl Intercept for RetryLog {
        fn name(&self) -> &'static str {
            "BakeryRetryLog"
        }

        fn read_after_attempt(
            &self,
            ctx: &FinalizerInterceptorContextRef<'_>,
            _rc: &RuntimeComponents,
            cfg: &mut ConfigBag,
        ) -> Result<(), BoxError> {
            let Some(Err(e)) = ctx.output_or_error() else {
                return Ok(());
            };
            let why = if e.is_timeout_error() {
                "no answer within the attempt timeout".to_string()
            } else if let Some(c) = e.as_connector_error() {
                if c.is_timeout() {
                    "no answer within the connect or read timeout".to_string()
                } else {
                    "connection failed".to_string()
                }
            } else if let Some(resp) = ctx.response() {
                let status = resp.status().as_u16();
                let code = error_code(
                    resp.headers().get("x-amzn-errortype"),
                    resp.body().bytes().unwrap_or_default(),
                );
                match code {
                    Some(c) => format!("{c} (HTTP {status})"),
                    None => format!("HTTP {status}"),
                }
            } else {
                "the answer could not be read".to_string()
            };
            cfg.interceptor_state().store_put(LastFailure(why));
            Ok(())
        }

        fn read_before_attempt(
            &self,
            _ctx: &BeforeTransmitInterceptorContextRef<'_>,
            _rc: &RuntimeComponents,
            cfg: &mut ConfigBag,
        ) -> Result<(), BoxError> {
            let attempt = cfg
                .load::<RequestAttempts>()
                .map(|a| a.attempts())
                .unwrap_or(1);
            if attempt < 2 {
                return Ok(());
            }
            let why = cfg
                .load::<LastFailure>()
                .map(|f| f.0.clone())
                .unwrap_or_else(|| "a transient error".into());
            let (service, op) = operation(cfg);
            say(
                &format!("{service}/{op}/{}/{why}/{attempt}", self.region),
                &format!(
                    "{service} {op} ({}): {why}; retrying with backoff, attempt {attempt} of {}",
                    self.region,
                    super::MAX_ATTEMPTS
                ),
            );
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
        SdkError::TimeoutError(_) => {
            "no answer within the timeouts after retries (BAKERY_AWS_ATTEMPT_TIMEOUT, BAKERY_AWS_OPERATION_TIMEOUT bound each call); check the network or the endpoint"
                .into()
        }
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
            .http_client(crate::aws::https::client())
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

    #[test]
    fn timeouts_come_from_the_environment_in_seconds_and_bad_values_name_the_variable() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            Timeouts::from_lookup(env(&[])).unwrap(),
            Timeouts::default()
        );
        let t = Timeouts::from_lookup(env(&[
            ("BAKERY_AWS_ATTEMPT_TIMEOUT", "1.5"),
            ("BAKERY_AWS_CONNECT_TIMEOUT", "2"),
        ]))
        .unwrap();
        assert_eq!(t.attempt, Duration::from_millis(1500));
        assert_eq!(t.connect, Duration::from_secs(2));
        assert_eq!(t.read, Timeouts::default().read);
        let c = t.config();
        assert_eq!(
            c.operation_attempt_timeout(),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(c.operation_timeout(), Some(Duration::from_secs(900)));
        for bad in ["x", "0", "-1", "1e9"] {
            let pairs: &'static [(&str, &str)] =
                Box::leak(vec![("BAKERY_AWS_READ_TIMEOUT", bad)].into_boxed_slice());
            let e = Timeouts::from_lookup(env(pairs)).unwrap_err();
            assert!(e.starts_with("BAKERY_AWS_READ_TIMEOUT="), "{e}");
        }
    }

    #[test]
    fn a_retry_says_the_service_error_code() {
        use retry_log::error_code;
        assert_eq!(
            error_code(Some("ThrottlingException:http://x"), b""),
            Some("ThrottlingException".into())
        );
        assert_eq!(
            error_code(None, b"<Response><Errors><Error><Code>RequestLimitExceeded</Code></Error></Errors></Response>"),
            Some("RequestLimitExceeded".into())
        );
        assert_eq!(
            error_code(
                None,
                br#"{"__type":"com.amazon#ServiceUnavailable","message":"x"}"#
            ),
            Some("ServiceUnavailable".into())
        );
        assert_eq!(error_code(None, b"<html>bad gateway</html>"), None);
    }
}
