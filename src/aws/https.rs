//! The HTTP(S) client every AWS SDK client and credential provider of bakery uses: the SDK's own
//! hyper 1 client (`aws-smithy-http-client`) on rustls with the `ring` crypto provider, built the
//! way `aws-smithy-runtime`'s `default-https-client` builds it (per-client connect/read timeouts,
//! the runtime's async sleep, proxies from `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY`), with
//! one difference: ring instead of aws-lc. aws-lc's cmake build was on the critical path of a
//! fresh install (every SDK service crate waited for it); ring builds in seconds, and the TLS a
//! bake host speaks to AWS endpoints (TLS 1.2/1.3, ECDHE, AES-GCM) is the same with either.
//!
//! Certificates: the system's roots (`rustls-native-certs`), loaded once per process when the
//! first client connects, as the SDK's default does.
//!
//! bakery's own HTTPS requests outside the SDK (Release files for the layer cache, `--package`
//! URLs, Prometheus) use [`connector`]: the same crypto provider and roots, in one place.

use std::sync::OnceLock;

use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use aws_smithy_http_client::{Builder, ConnectorBuilder};
use aws_smithy_runtime_api::client::http::SharedHttpClient;

/// The process's one HTTPS client (connection pools are per client, so sharing it lets
/// successive SDK clients of one region reuse connections).
pub fn client() -> SharedHttpClient {
    static CLIENT: OnceLock<SharedHttpClient> = OnceLock::new();
    CLIENT.get_or_init(build).clone()
}

fn build() -> SharedHttpClient {
    // `build_with_connector_fn` is what the SDK's default client is made with: the connector is
    // built per set of connector settings, so each SDK client's timeouts apply. (The public
    // `build_https` would leave proxies disabled.)
    Builder::new().build_with_connector_fn(|settings, components| {
        let mut conn = ConnectorBuilder::default().tls_provider(Provider::Rustls(CryptoMode::Ring));
        conn.set_connector_settings(settings.cloned());
        if let Some(c) = components {
            conn.set_sleep_impl(c.sleep_impl());
        }
        conn.set_proxy_config(Some(ProxyConfig::from_env()));
        conn.build()
    })
}

/// The TLS connector of bakery's plain hyper clients: rustls on ring with the system's roots,
/// HTTPS only, HTTP/1.1. Errors: the system's CA certificates cannot be loaded.
pub fn connector(
) -> std::io::Result<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>>
{
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(rustls::crypto::ring::default_provider())?
        .https_only()
        .enable_http1()
        .build())
}
