//! Byte transport between masters: TCP with length-prefixed frames.
//!
//! The only module that touches sockets. [`TransportSecurity`] decides how a TCP stream
//! becomes an authenticated stream: plaintext (loopback and tests) or mutual TLS
//! (tokio-rustls, [`MutualTls`]) wrapping the same `TcpStream`; the RPC layer only sees
//! [`BoxStream`].

use std::fmt;
use std::io;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest frame accepted: bounds memory per connection against a bad peer.
pub const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;

/// A bidirectional byte stream (plain TCP today, TLS later).
pub trait AsyncStream: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> AsyncStream for T {}

/// A boxed [`AsyncStream`].
pub type BoxStream = Box<dyn AsyncStream>;

/// How node-to-node connections are secured.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub enum TransportSecurity {
    /// No encryption or peer authentication: only for loopback and tests.
    #[default]
    Plaintext,
    /// Mutual TLS (rustls): both sides present a certificate from the network's CA.
    MutualTls(MutualTls),
}

/// rustls configurations for [`TransportSecurity::MutualTls`]. The server config must
/// require client certificates; the client config must present one.
#[derive(Clone)]
pub struct MutualTls {
    /// Used when connecting to a peer.
    pub client: Arc<tokio_rustls::rustls::ClientConfig>,
    /// Used when accepting a peer.
    pub server: Arc<tokio_rustls::rustls::ServerConfig>,
}

impl fmt::Debug for MutualTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MutualTls")
    }
}

/// The TLS server name of `host:port` (an IP address or a DNS name).
fn server_name(addr: &str) -> io::Result<tokio_rustls::rustls::pki_types::ServerName<'static>> {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    tokio_rustls::rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

impl TransportSecurity {
    /// Opens a client connection to `addr`.
    pub async fn connect(&self, addr: &str) -> io::Result<BoxStream> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        match self {
            Self::Plaintext => Ok(Box::new(stream)),
            Self::MutualTls(tls) => {
                let connector = tokio_rustls::TlsConnector::from(tls.client.clone());
                let stream = connector.connect(server_name(addr)?, stream).await?;
                Ok(Box::new(stream))
            }
        }
    }

    /// Completes an accepted server-side connection.
    pub async fn accept(&self, stream: TcpStream) -> io::Result<BoxStream> {
        stream.set_nodelay(true)?;
        match self {
            Self::Plaintext => Ok(Box::new(stream)),
            Self::MutualTls(tls) => {
                let acceptor = tokio_rustls::TlsAcceptor::from(tls.server.clone());
                Ok(Box::new(acceptor.accept(stream).await?))
            }
        }
    }
}

/// Writes one frame: u32 big-endian length, then the payload.
pub async fn write_frame(stream: &mut BoxStream, payload: &[u8]) -> io::Result<()> {
    if payload.len() > MAX_FRAME_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "frame too large",
        ));
    }
    let mut buf = Vec::with_capacity(4 + payload.len());
    buf.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    buf.extend_from_slice(payload);
    stream.write_all(&buf).await?;
    stream.flush().await
}

/// Reads one frame; refuses lengths above [`MAX_FRAME_BYTES`].
pub async fn read_frame(stream: &mut BoxStream) -> io::Result<Vec<u8>> {
    let mut len_bytes = [0u8; 4];
    stream.read_exact(&mut len_bytes).await?;
    let len = u32::from_be_bytes(len_bytes) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "frame too large",
        ));
    }
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await?;
    Ok(payload)
}
