//! Where the devices are: Modbus TCP (`tcp://host:502`) or RTU on a serial line
//! (`rtu:///dev/ttyUSB0` with baud rate, parity, data and stop bits), and opening a client
//! context on either.

use std::fmt;
use std::time::Duration;

use tokio_modbus::client::Context;
use tokio_serial::{DataBits, Parity, SerialPort, SerialPortBuilderExt, StopBits};
use weir_engine::PipelineError;
use weir_engine::parse::Options;

use super::settings::{BAUD_RATE, DATA_BITS, PARITY, STOP_BITS, URL};

/// Serial line settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Serial {
    /// Device path.
    pub path: String,
    /// Baud rate.
    pub baud_rate: u32,
    /// Parity.
    pub parity: Parity,
    /// Data bits.
    pub data_bits: DataBits,
    /// Stop bits.
    pub stop_bits: StopBits,
}

/// A Modbus link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// Modbus TCP to `host:port`.
    Tcp(String),
    /// Modbus RTU on a serial line.
    Rtu(Serial),
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transport::Tcp(addr) => write!(f, "tcp://{addr}"),
            Transport::Rtu(s) => write!(f, "rtu://{} ({} baud)", s.path, s.baud_rate),
        }
    }
}

impl Transport {
    /// Reads `url` and, for RTU, the serial options (defaults: 19200 baud, even parity,
    /// 8 data bits, 1 stop bit, as the Modbus serial line specification prescribes).
    pub fn from_options(o: &Options) -> Result<Transport, PipelineError> {
        let entry = o.require(&URL)?;
        let url = entry.value.trim();
        if let Some(rest) = url.strip_prefix("tcp://") {
            let hostport = rest.trim_end_matches('/');
            if hostport.is_empty() || hostport.contains('/') {
                return Err(o.value_error(entry, "expected tcp://host:port"));
            }
            let addr = if hostport
                .rsplit_once(':')
                .is_some_and(|(_, p)| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
            {
                hostport.to_string()
            } else {
                format!("{hostport}:502")
            };
            return Ok(Transport::Tcp(addr));
        }
        let Some(path) = url.strip_prefix("rtu://") else {
            return Err(o.value_error(
                entry,
                "expected tcp://host:port or rtu:///dev/ttyUSB0 (a serial device path)",
            ));
        };
        if !path.starts_with('/') {
            return Err(o.value_error(
                entry,
                "expected rtu:// followed by an absolute device path, e.g. rtu:///dev/ttyUSB0",
            ));
        }
        let baud_rate: u64 = o.value(&BAUD_RATE)?;
        let baud_rate = u32::try_from(baud_rate)
            .ok()
            .filter(|b| *b > 0)
            .ok_or_else(|| o.error(format!("baud_rate {baud_rate} is out of range")))?;
        let parity = match o.value::<String>(&PARITY)?.as_str() {
            "none" => Parity::None,
            "odd" => Parity::Odd,
            _ => Parity::Even,
        };
        let data_bits = match o.value::<String>(&DATA_BITS)?.as_str() {
            "5" => DataBits::Five,
            "6" => DataBits::Six,
            "7" => DataBits::Seven,
            _ => DataBits::Eight,
        };
        let stop_bits = match o.value::<String>(&STOP_BITS)?.as_str() {
            "2" => StopBits::Two,
            _ => StopBits::One,
        };
        Ok(Transport::Rtu(Serial {
            path: path.to_string(),
            baud_rate,
            parity,
            data_bits,
            stop_bits,
        }))
    }

    /// Opens a client context (no unit selected yet), giving up after `timeout`.
    pub async fn connect(&self, timeout: Duration) -> std::io::Result<Context> {
        let timed_out =
            || std::io::Error::new(std::io::ErrorKind::TimedOut, "connection attempt timed out");
        match self {
            Transport::Tcp(addr) => {
                let stream = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr))
                    .await
                    .map_err(|_| timed_out())??;
                stream.set_nodelay(true)?;
                Ok(tokio_modbus::client::tcp::attach(stream))
            }
            Transport::Rtu(s) => {
                let port = tokio_serial::new(&s.path, s.baud_rate)
                    .parity(s.parity)
                    .data_bits(s.data_bits)
                    .stop_bits(s.stop_bits)
                    .open_native_async()?;
                // bytes left from before (a late answer, line noise) would be taken for
                // the next response
                port.clear(tokio_serial::ClearBuffer::All)?;
                Ok(tokio_modbus::client::rtu::attach(port))
            }
        }
    }
}
