//! A real S3-compatible server for tests: `s3s-fs` (installed by `scripts/test`) on a free
//! loopback port, checking request signatures, keeping its data in a directory so that it
//! can be stopped and started again, and a client to read the bucket back.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::process::ServerProcess;

/// Access key the server accepts.
pub const ACCESS_KEY: &str = "WEIRTESTKEY";
/// Secret key the server accepts.
pub const SECRET_KEY: &str = "weir-test-secret-key";
/// The bucket that exists.
pub const BUCKET: &str = "edge";

/// A stoppable S3 server.
pub struct S3Server {
    /// Declared first: dropped (killed) before its directory goes.
    process: ServerProcess,
    dir: tempfile::TempDir,
    /// Its port.
    pub port: u16,
}

fn binary() -> PathBuf {
    if let Ok(p) = which("s3s-fs") {
        return p;
    }
    let home = std::env::var("HOME").unwrap_or_default();
    PathBuf::from(home).join(".cargo/bin/s3s-fs")
}

fn which(name: &str) -> Result<PathBuf, ()> {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|d| PathBuf::from(d).join(name))
        .find(|p| p.exists())
        .ok_or(())
}

impl S3Server {
    /// Starts a server with bucket [`BUCKET`].
    pub fn start() -> S3Server {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("data").join(BUCKET)).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.path().join("s3s.log");
        let mut s = S3Server {
            dir,
            port,
            process: ServerProcess::new("s3s-fs", log),
        };
        s.restart();
        s
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops it (SIGKILL).
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts it again on the same port with the same data.
    pub fn restart(&mut self) {
        let data = self.dir.path().join("data");
        let port = self.port.to_string();
        self.process.start(
            Command::new(binary())
                .args(["--host", "127.0.0.1", "--port", &port])
                .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
                .arg(data),
            &[self.port],
        );
    }

    /// Where the server keeps the objects of `bucket`: one file per object, at its key (what
    /// a query engine reads as the bucket's contents).
    pub fn bucket_dir(&self, bucket: &str) -> PathBuf {
        self.dir.path().join("data").join(bucket)
    }

    /// A client of [`BUCKET`].
    pub fn client(&self) -> Arc<dyn ObjectStore> {
        self.client_of(BUCKET)
    }

    /// A client of `bucket`.
    pub fn client_of(&self, bucket: &str) -> Arc<dyn ObjectStore> {
        Arc::new(
            AmazonS3Builder::new()
                .with_endpoint(self.endpoint())
                .with_allow_http(true)
                .with_bucket_name(bucket)
                .with_region("us-east-1")
                .with_access_key_id(ACCESS_KEY)
                .with_secret_access_key(SECRET_KEY)
                .build()
                .unwrap(),
        )
    }

    /// Every object of [`BUCKET`] under `prefix`: key and its Parquet rows.
    pub async fn objects(&self, prefix: &str) -> Vec<(String, Vec<RecordBatch>)> {
        self.objects_in(BUCKET, prefix).await
    }

    /// Every object of `bucket` under `prefix`: key and its Parquet rows.
    pub async fn objects_in(&self, bucket: &str, prefix: &str) -> Vec<(String, Vec<RecordBatch>)> {
        let store = self.client_of(bucket);
        let p = object_store::path::Path::from(prefix);
        let metas: Vec<_> = store.list(Some(&p)).try_collect().await.unwrap();
        let mut out = Vec::new();
        for m in metas {
            let data = store.get(&m.location).await.unwrap().bytes().await.unwrap();
            let batches = ParquetRecordBatchReaderBuilder::try_new(data)
                .unwrap()
                .build()
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            out.push((m.location.to_string(), batches));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}
