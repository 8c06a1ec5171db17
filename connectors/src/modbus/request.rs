//! One request (a planned read, a write) sent to one unit, with a timeout and retries, and
//! its outcome sorted into the kinds the source and the sink count.

use std::time::Duration;

use tokio_modbus::client::Client;
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::{ExceptionCode, Request, Response, Slave};

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

/// The request that reads `read`.
fn read_request(read: &Read) -> Request<'static> {
    match read.table {
        Table::Coil => Request::ReadCoils(read.start, read.count),
        Table::DiscreteInput => Request::ReadDiscreteInputs(read.start, read.count),
        Table::Holding => Request::ReadHoldingRegisters(read.start, read.count),
        Table::Input => Request::ReadInputRegisters(read.start, read.count),
    }
}

/// The items of a read's answer, as it came: tokio-modbus' typed readers assert (in debug
/// builds) that a device answers with as many items as asked for, which a broken or hostile
/// device need not do; [`complete`] checks that instead.
fn data(response: Response) -> Data {
    match response {
        Response::ReadCoils(bits) | Response::ReadDiscreteInputs(bits) => Data::Bits(bits),
        Response::ReadHoldingRegisters(words) | Response::ReadInputRegisters(words) => {
            Data::Words(words)
        }
        // tokio-modbus refuses an answer to another function; nothing was read
        _ => Data::Words(Vec::new()),
    }
}

/// The answer to `read`, when it holds every item asked for.
/// Bits come in whole bytes: the padding after the last one asked for is dropped.
fn complete(mut data: Data, read: &Read) -> Result<Data, Failure> {
    let asked = usize::from(read.count);
    let got = match &data {
        Data::Words(w) => w.len(),
        Data::Bits(b) => b.len(),
    };
    if got < asked {
        return Err(Failure {
            kind: "bad_response",
            detail: format!("{got} items in the answer, {asked} asked for"),
        });
    }
    if let Data::Bits(b) = &mut data {
        b.truncate(asked);
    }
    Ok(data)
}

/// Answers a read of holding registers and a read of coils with `bytes`, as a Modbus TCP
/// server would (for fuzzing): the client library parses them and Weir checks the answer;
/// whatever the bytes, it ends without panicking.
pub async fn fuzz_answer(bytes: &[u8]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for read in [
        Read {
            table: Table::Holding,
            start: 0,
            count: 4,
            points: vec![],
        },
        Read {
            table: Table::Coil,
            start: 0,
            count: 9,
            points: vec![],
        },
    ] {
        let (client, mut server) = tokio::io::duplex(1 << 16);
        let answer = bytes.to_vec();
        let serve = async move {
            let mut request = [0u8; 12];
            let _ = server.read_exact(&mut request).await;
            let _ = server.write_all(&answer).await;
            let _ = server.shutdown().await;
        };
        let mut ctx = tokio_modbus::client::tcp::attach(client);
        let ask = tokio::time::timeout(Duration::from_millis(50), ctx.call(read_request(&read)));
        let (answer, ()) = tokio::join!(ask, serve);
        if let Ok(Ok(Ok(response))) = answer {
            let _ = complete(data(response), &read);
        }
    }
}

/// Sends `read` to `unit` (see [`call`]) and checks that the answer holds every item.
pub async fn execute(
    link: &mut Link,
    unit: u8,
    read: &Read,
    timeout: Duration,
    retries: u32,
) -> Result<Data, Failure> {
    let response = call(link, unit, &read_request(read), timeout, retries).await?;
    complete(data(response), read)
}

/// Sends `request` to `unit`; a timeout or transport error closes the connection and is
/// retried up to `retries` times on a new one. Exceptions are not retried.
pub async fn call(
    link: &mut Link,
    unit: u8,
    request: &Request<'static>,
    timeout: Duration,
    retries: u32,
) -> Result<Response, Failure> {
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
        let failure = match tokio::time::timeout(timeout, ctx.call(request.clone())).await {
            Ok(Ok(Ok(response))) => {
                link.confirm();
                return Ok(response);
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
