//! Which object store a sink writes to: `s3://bucket/prefix` (any S3-compatible endpoint),
//! `gs://bucket/prefix`, `az://container/prefix` or `file:///directory`, with short timeouts
//! and few retries so that an unreachable store is noticed quickly and files are spilled.

use std::sync::Arc;
#[cfg(any(feature = "s3", feature = "gcs", feature = "azure"))]
use std::time::Duration;

use object_store::ObjectStore;
#[cfg(feature = "s3")]
use object_store::aws::AmazonS3Builder;
#[cfg(feature = "azure")]
use object_store::azure::MicrosoftAzureBuilder;
#[cfg(feature = "gcs")]
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
#[cfg(any(feature = "s3", feature = "gcs", feature = "azure"))]
use object_store::{BackoffConfig, ClientOptions, RetryConfig};

use weir_engine::PipelineError;
use weir_engine::parse::Options;
use weir_engine::parse::options::OptionEntry;

#[cfg(any(feature = "s3", feature = "gcs", feature = "azure"))]
use super::settings::TIMEOUT;
use super::settings::URL;
#[cfg(feature = "s3")]
use super::settings::{ACCESS_KEY_ID, ENDPOINT, PATH_STYLE, REGION, SECRET_ACCESS_KEY};

/// A store and the key prefix inside it.
#[derive(Debug, Clone)]
pub struct Target {
    /// The store.
    pub store: Arc<dyn ObjectStore>,
    /// Key prefix (no leading or trailing `/`).
    pub prefix: String,
    /// The URL without credentials, for messages.
    pub display: String,
}

#[cfg(any(feature = "s3", feature = "gcs", feature = "azure"))]
/// One quick retry: a store that does not answer is the spill buffer's business, and a long
/// retry would hold up the uploader.
fn retry() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            base: 2.0,
        },
        max_retries: 1,
        retry_timeout: Duration::from_secs(10),
    }
}

#[cfg(any(feature = "s3", feature = "gcs", feature = "azure"))]
fn client(o: &Options, allow_http: bool) -> Result<ClientOptions, PipelineError> {
    let timeout: Duration = o.value(&TIMEOUT)?;
    Ok(ClientOptions::new()
        .with_allow_http(allow_http)
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(timeout))
}

/// The Cargo feature that brings the store of URL scheme `scheme`, when this build was made
/// without it.
fn absent_store(scheme: &str) -> Option<&'static str> {
    let feature = match scheme {
        "s3" | "s3a" => "s3",
        "gs" => "gcs",
        "az" | "abfs" | "abfss" | "azure" => "azure",
        _ => return None,
    };
    crate::FEATURES
        .iter()
        .any(|&(f, on)| f == feature && !on)
        .then_some(feature)
}

/// The remote store of `url` (the `url` option's `entry`): S3, GCS or Azure, as built in.
fn remote(
    o: &Options,
    entry: &OptionEntry,
    url: &url::Url,
) -> Result<Arc<dyn ObjectStore>, PipelineError> {
    #[cfg(any(feature = "s3", feature = "gcs", feature = "azure"))]
    let fail = |e: object_store::Error| o.value_error(entry, &format!("{e}"));
    match url.scheme() {
        #[cfg(feature = "s3")]
        "s3" | "s3a" => {
            let bucket = url.host_str().unwrap_or_default();
            let endpoint = o.text(&ENDPOINT).map(str::to_string);
            let allow_http = endpoint
                .as_deref()
                .is_some_and(|e| e.starts_with("http://"));
            let mut b = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_retry(retry())
                .with_client_options(client(o, allow_http)?);
            if let Some(e) = endpoint {
                b = b.with_endpoint(e);
            }
            if let Some(r) = o.text(&REGION) {
                b = b.with_region(r);
            }
            // path style (https://host/bucket/key) unless told otherwise: what MinIO, Ceph and
            // most S3-compatible stores expect
            let path_style: bool = o.value(&PATH_STYLE)?;
            b = b.with_virtual_hosted_style_request(!path_style);
            if let Some(k) = o.text(&ACCESS_KEY_ID) {
                b = b.with_access_key_id(k);
            }
            if let Some(k) = o.text(&SECRET_ACCESS_KEY) {
                b = b.with_secret_access_key(k);
            }
            Ok(Arc::new(b.build().map_err(fail)?))
        }
        #[cfg(feature = "gcs")]
        "gs" => Ok(Arc::new(
            GoogleCloudStorageBuilder::from_env()
                .with_url(url.as_str())
                .with_retry(retry())
                .with_client_options(client(o, false)?)
                .build()
                .map_err(fail)?,
        )),
        #[cfg(feature = "azure")]
        "az" | "abfs" | "abfss" | "azure" => Ok(Arc::new(
            MicrosoftAzureBuilder::from_env()
                .with_url(url.as_str())
                .with_retry(retry())
                .with_client_options(client(o, false)?)
                .build()
                .map_err(fail)?,
        )),
        other => {
            let message = match absent_store(other) {
                Some(feature) => {
                    format!("{other}:// is not in this build (built without feature \"{feature}\")")
                }
                None => {
                    format!("unsupported scheme '{other}' (use s3://, gs://, az:// or file://)")
                }
            };
            Err(o.value_error(entry, &message))
        }
    }
}

/// Builds the store named by the `url` option and the options that go with its scheme.
pub fn target(o: &Options) -> Result<Target, PipelineError> {
    let entry = o.require(&URL)?;
    let url = url::Url::parse(entry.value.trim())
        .map_err(|e| o.value_error(entry, &format!("not a URL: {e}")))?;
    if url.scheme() == "file" {
        let dir = url
            .to_file_path()
            .map_err(|()| o.value_error(entry, "file:// needs an absolute path"))?;
        std::fs::create_dir_all(&dir)
            .map_err(|e| o.value_error(entry, &format!("cannot create {}: {e}", dir.display())))?;
        let store = LocalFileSystem::new_with_prefix(&dir)
            .map_err(|e| o.value_error(entry, &format!("{e}")))?;
        return Ok(Target {
            store: Arc::new(store),
            prefix: String::new(),
            display: url.to_string(),
        });
    }
    let store = remote(o, entry, &url)?;
    let prefix = url.path().trim_matches('/').to_string();
    let mut display = url.clone();
    let _ = display.set_password(None);
    let _ = display.set_username("");
    Ok(Target {
        store,
        prefix,
        display: display.to_string(),
    })
}
