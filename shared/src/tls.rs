//! [`Tls`]: what a process needs to reach a broker over `amqps://` besides the system's trusted
//! certificates: a CA that signed the broker's certificate, and a client certificate and key for
//! brokers that ask for one. They come from settings, or from the URL's query string with the
//! names RabbitMQ's own clients use (`?cacertfile=…&certfile=…&keyfile=…`); a setting wins over
//! the URL.

use crate::error::{Error, Result};
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use std::path::{Path, PathBuf};

/// TLS files for `amqps://` connections. All PEM: the CA file may hold several certificates,
/// the certificate file the client's certificate and its chain, the key file its private key
/// (PKCS#8, PKCS#1 or SEC1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Tls {
    /// A CA to trust besides the system's.
    pub ca_file: Option<PathBuf>,
    /// The client certificate, for brokers that verify clients (`ssl_options.verify = verify_peer`).
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key.
    pub key_file: Option<PathBuf>,
}

impl Tls {
    /// Sets [`Tls::ca_file`].
    #[must_use]
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// Sets [`Tls::cert_file`] and [`Tls::key_file`].
    #[must_use]
    pub fn client_certificate(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.cert_file = Some(cert.into());
        self.key_file = Some(key.into());
        self
    }

    /// Whether nothing is set.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ca_file.is_none() && self.cert_file.is_none() && self.key_file.is_none()
    }

    /// What is wrong with these settings for `url`, one line each, named by setting.
    #[must_use]
    pub fn problems(&self, url: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if self.cert_file.is_some() != self.key_file.is_some() {
            problems
                .push("tls_cert_file, tls_key_file: a client certificate needs both its file and its key".to_owned());
        }
        if !self.is_empty() && url.split(',').any(|one| !one.trim_start().starts_with("amqps://")) {
            problems.push("tls_*: TLS files are set, but a broker URL is not amqps://".to_owned());
        }
        problems
    }

    /// These settings over those in `url`'s query string.
    pub(crate) fn over_url(&self, url: &str) -> Self {
        let query = url::Url::parse(url).ok();
        let from_url = |name: &str| {
            query.as_ref()?.query_pairs().find(|(key, _)| key == name).map(|(_, value)| PathBuf::from(&*value))
        };
        Self {
            ca_file: self.ca_file.clone().or_else(|| from_url("cacertfile")),
            cert_file: self.cert_file.clone().or_else(|| from_url("certfile")),
            key_file: self.key_file.clone().or_else(|| from_url("keyfile")),
        }
    }

    /// The files read, as lapin takes them; a file that cannot be read is an error naming it.
    pub(crate) fn load(&self) -> Result<OwnedTLSConfig> {
        let cert_chain = self.ca_file.as_deref().map(|path| read(path, "CA")).transpose()?;
        let identity = match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => Some(OwnedIdentity::PKCS8 {
                pem: read(cert, "client certificate")?.into_bytes(),
                key: read(key, "client key")?.into_bytes(),
            }),
            (None, None) => None,
            _ => return Err(Error::Tls("a client certificate needs both its file and its key".into())),
        };
        Ok(OwnedTLSConfig { identity, cert_chain })
    }
}

fn read(path: &Path, what: &str) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Tls(format!("cannot read the {what} file {}: {e}", path.display())))?;
    if text.contains("-----BEGIN ") {
        Ok(text)
    } else {
        Err(Error::Tls(format!("the {what} file {} is not PEM (no -----BEGIN line)", path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_win_over_the_urls_query_and_bad_combinations_are_named() {
        let url = "amqps://u:p@h:5671/%2f?cacertfile=/url/ca.pem&certfile=/url/c.pem&keyfile=/url/k.pem";
        let tls = Tls::default().ca_file("/set/ca.pem").over_url(url);
        assert_eq!(tls.ca_file.as_deref(), Some(Path::new("/set/ca.pem")));
        assert_eq!(tls.cert_file.as_deref(), Some(Path::new("/url/c.pem")));
        assert_eq!(tls.key_file.as_deref(), Some(Path::new("/url/k.pem")));
        assert_eq!(Tls::default().over_url("amqp://h/%2f"), Tls::default());

        assert!(tls.problems(url).is_empty());
        let half = Tls { cert_file: Some("/c.pem".into()), ..Tls::default() };
        assert_eq!(half.problems(url).len(), 1);
        assert!(Tls::default().ca_file("/ca.pem").problems("amqp://h/")[0].contains("not amqps://"));
    }

    #[test]
    fn files_that_are_missing_or_not_pem_are_named() {
        let missing = Tls::default().ca_file("/nonexistent/ca.pem").load().expect_err("missing");
        assert!(missing.to_string().contains("cannot read the CA file /nonexistent/ca.pem"), "{missing}");
        let path = std::env::temp_dir().join(format!("lepus-not-pem-{}", fastrand::u64(..)));
        std::fs::write(&path, "hello").expect("written");
        let not_pem = Tls::default().ca_file(&path).load().expect_err("not PEM");
        assert!(not_pem.to_string().contains("is not PEM"), "{not_pem}");
        drop(std::fs::remove_file(path));
    }
}
