//! The signals `weir run` answers, installed before it does anything else (so that a signal
//! in its first milliseconds is handled, not fatal): SIGTERM, SIGINT and SIGQUIT stop it
//! (a second one exits at once), SIGHUP reloads the pipeline files.

use std::io;

#[cfg(unix)]
use tokio::signal::unix::{Signal, SignalKind, signal};

/// SIGTERM, SIGINT and SIGQUIT.
pub struct StopSignals {
    #[cfg(unix)]
    kinds: Vec<Signal>,
}

/// SIGHUP.
pub struct ReloadSignal {
    #[cfg(unix)]
    hup: Signal,
}

/// Installs the handlers (inside the runtime): from here on these signals are queued for
/// the returned streams instead of ending the process.
pub fn install() -> io::Result<(StopSignals, ReloadSignal)> {
    #[cfg(unix)]
    {
        let kinds = [
            SignalKind::terminate(),
            SignalKind::interrupt(),
            SignalKind::quit(),
        ]
        .into_iter()
        .map(signal)
        .collect::<io::Result<Vec<_>>>()?;
        Ok((
            StopSignals { kinds },
            ReloadSignal {
                hup: signal(SignalKind::hangup())?,
            },
        ))
    }
    #[cfg(not(unix))]
    {
        Ok((StopSignals {}, ReloadSignal {}))
    }
}

impl StopSignals {
    /// Resolves on the next stop signal (also one that came before the call).
    pub async fn recv(&mut self) {
        #[cfg(unix)]
        {
            let next = self.kinds.iter_mut().map(|s| Box::pin(s.recv()));
            futures::future::select_all(next).await;
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

impl ReloadSignal {
    /// Resolves on the next SIGHUP (never, off Unix).
    pub async fn recv(&mut self) {
        #[cfg(unix)]
        {
            self.hup.recv().await;
        }
        #[cfg(not(unix))]
        {
            std::future::pending::<()>().await;
        }
    }
}
