//! Who may ask: a bearer token (or a Basic handshake with the token as password), checked
//! on every call.

use std::sync::Arc;

use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use tonic::Status;
use tonic::metadata::MetadataMap;

use crate::secret::same;

/// The configured token; `None` serves without authentication.
#[derive(Clone, Default)]
pub struct Auth {
    token: Option<Arc<str>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Base64 with or without padding: Go's Flight client (ADBC's driver) sends it unpadded.
const BASIC: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The hint every authentication error ends with.
const HOW: &str = "send the header 'authorization: Bearer <token>', or do a Basic handshake with any user name and the token as password";

impl Auth {
    /// Checks calls against `token` (`None`: anyone may call).
    pub fn new(token: Option<String>) -> Self {
        Self {
            token: token.map(Arc::from),
        }
    }

    /// True when calls need the token.
    pub fn required(&self) -> bool {
        self.token.is_some()
    }

    /// The token a successful handshake hands back.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Accepts a call whose metadata carries the token, as `Bearer` or `Basic`.
    pub fn check(&self, metadata: &MetadataMap) -> Result<(), Status> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        let Some(header) = metadata.get("authorization") else {
            return Err(Status::unauthenticated(format!(
                "missing credentials: {HOW}"
            )));
        };
        let header = header.to_str().map_err(|_| {
            Status::unauthenticated(format!("unreadable authorization header: {HOW}"))
        })?;
        let (scheme, value) = header.split_once(' ').unwrap_or((header, ""));
        let presented = if scheme.eq_ignore_ascii_case("bearer") {
            value.trim().to_string()
        } else if scheme.eq_ignore_ascii_case("basic") {
            let decoded = BASIC
                .decode(value.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| {
                    Status::unauthenticated(format!("malformed Basic credentials: {HOW}"))
                })?;
            decoded
                .split_once(':')
                .map(|(_, pass)| pass.to_string())
                .unwrap_or_default()
        } else if value.is_empty() {
            // a bare value is most likely the token itself: never echo it
            return Err(Status::unauthenticated(format!(
                "authorization header without a scheme: {HOW}"
            )));
        } else {
            let scheme: String = scheme.chars().take(16).collect();
            return Err(Status::unauthenticated(format!(
                "unsupported authorization scheme '{scheme}': {HOW}"
            )));
        };
        if same(presented.as_bytes(), token.as_bytes()) {
            Ok(())
        } else {
            Err(Status::unauthenticated(format!("invalid token: {HOW}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(header: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert("authorization", header.parse().unwrap());
        m
    }

    #[test]
    fn bearer_and_basic_with_the_token_pass_others_do_not() {
        let a = Auth::new(Some("s3cret".into()));
        assert!(a.check(&with("Bearer s3cret")).is_ok());
        assert!(a.check(&with("bearer s3cret")).is_ok());
        let basic = BASIC.encode("anyone:s3cret");
        assert!(a.check(&with(&format!("Basic {basic}"))).is_ok());
        // Go's client leaves the padding off
        assert!(a.check(&with("Basic YW55b25lOnMzY3JldA")).is_ok());
        let e = a.check(&with("Bearer wrong")).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert!(e.message().starts_with("invalid token"));
        let e = a.check(&MetadataMap::new()).unwrap_err();
        assert!(e.message().starts_with("missing credentials"));
        let e = a.check(&with("Digest x")).unwrap_err();
        assert!(e.message().contains("'Digest'"));
        // the token sent without a scheme is not quoted back
        let e = a.check(&with("s3cret")).unwrap_err();
        assert!(
            e.message()
                .starts_with("authorization header without a scheme")
        );
        assert!(!e.message().contains("s3cret"));
        assert!(Auth::new(None).check(&MetadataMap::new()).is_ok());
        assert!(!format!("{a:?}").contains("s3cret"));
    }
}
