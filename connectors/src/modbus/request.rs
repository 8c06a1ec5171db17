//! One planned read sent to one unit, with a timeout and retries, and its outcome sorted
//! into the kinds the source counts.

use std::time::Duration;

use tokio_modbus::client::Reader;
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::{ExceptionCode, Slave};

use super::link::Link;
use super::plan::Read;
use super::register_map::Table;

/// What a read returned.
#[derive(Debug)]
pub enum Data {
    /// Register values.
    Words(Vec<u16>),
    /// Bits.
    Bits(Vec<bool>),
}

/// Why a read gave no data.
#[derive(Debug)]
pub struct Failure {
    /// Metric label (`snake_case`).
    pub kind: &'static str,
    /// What happened.
    pub detail: String,
}

/// The metric label of a Modbus exception.
fn exception_kind(e: ExceptionCode) -> &'static str {
    match e {
        ExceptionCode::IllegalFunction => "illegal_function",
        ExceptionCode::IllegalDataAddress => "illegal_data_address",
        ExceptionCode::IllegalDataValue => "illegal_data_value",
        ExceptionCode::ServerDeviceFailure => "server_device_failure",
        ExceptionCode::Acknowledge => "acknowledge",
        ExceptionCode::ServerDeviceBusy => "server_device_busy",
        ExceptionCode::MemoryParityError => "memory_parity_error",
        ExceptionCode::GatewayPathUnavailable => "gateway_path_unavailable",
        ExceptionCode::GatewayTargetDevice => "gateway_target_device",
        ExceptionCode::Custom(_) => "exception",
    }
}

async fn send(ctx: &mut tokio_modbus::client::Context, read: &Read) -> tokio_modbus::Result<Data> {
    Ok(match read.table {
        Table::Coil => ctx
            .read_coils(read.start, read.count)
            .await?
            .map(Data::Bits),
        Table::DiscreteInput => ctx
            .read_discrete_inputs(read.start, read.count)
            .await?
            .map(Data::Bits),
        Table::Holding => ctx
            .read_holding_registers(read.start, read.count)
            .await?
            .map(Data::Words),
        Table::Input => ctx
            .read_input_registers(read.start, read.count)
            .await?
            .map(Data::Words),
    })
}

/// Sends `read` to `unit`; a timeout or transport error closes the connection and is
/// retried up to `retries` times on a new one. Exceptions are not retried.
pub async fn execute(
    link: &mut Link,
    unit: u8,
    read: &Read,
    timeout: Duration,
    retries: u32,
) -> Result<Data, Failure> {
    let mut attempt = 0;
    loop {
        link.count_request();
        let Some(ctx) = link.context().await else {
            return Err(Failure {
                kind: "not_connected",
                detail: format!("{} cannot be reached", link.transport()),
            });
        };
        ctx.set_slave(Slave(unit));
        let failure = match tokio::time::timeout(timeout, send(ctx, read)).await {
            Ok(Ok(Ok(data))) => {
                let got = match &data {
                    Data::Words(w) => w.len(),
                    Data::Bits(b) => b.len(),
                };
                if got < read.count as usize {
                    return Err(Failure {
                        kind: "bad_response",
                        detail: format!("{got} items in the answer, {} asked for", read.count),
                    });
                }
                link.confirm();
                return Ok(data);
            }
            Ok(Ok(Err(code))) => {
                return Err(Failure {
                    kind: exception_kind(code),
                    detail: format!("exception {code}"),
                });
            }
            Ok(Err(tokio_modbus::Error::Protocol(e))) => Failure {
                kind: "bad_response",
                detail: e.to_string(),
            },
            Ok(Err(tokio_modbus::Error::Transport(e)))
                if e.kind() == std::io::ErrorKind::InvalidData =>
            {
                Failure {
                    kind: "bad_response",
                    detail: e.to_string(),
                }
            }
            Ok(Err(tokio_modbus::Error::Transport(e))) => Failure {
                kind: "connection_lost",
                detail: e.to_string(),
            },
            Err(_) => Failure {
                kind: "timeout",
                detail: format!("no answer within {timeout:?}"),
            },
        };
        link.drop_connection(failure.kind);
        if attempt >= retries {
            return Err(failure);
        }
        attempt += 1;
    }
}
