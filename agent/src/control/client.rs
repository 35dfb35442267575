//! The CLI's side of the control socket.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::net::UnixStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use super::protocol::{MAX_FRAME, PROTOCOL_VERSION, Request, RequestBody, Response};

const TIMEOUT: Duration = Duration::from_secs(10);

/// Why a control request failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    /// No agent listens at the socket.
    #[error(
        "cannot reach the agent at {path}: {source} (is `mob-agent run` running? pick its socket with --agent or MOB_AGENT)"
    )]
    Connect {
        /// The socket path.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The exchange failed midway.
    #[error("control request failed: {0}")]
    Exchange(String),
    /// The agent answered with an error.
    #[error("{0}")]
    Agent(String),
}

type ControlFramed = Framed<UnixStream, LengthDelimitedCodec>;

/// Connects to the agent and sends one request.
async fn send_request(socket: &Path, body: RequestBody) -> Result<ControlFramed, ClientError> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|source| ClientError::Connect {
            path: socket.display().to_string(),
            source,
        })?;
    let codec = LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME)
        .new_codec();
    let mut framed = Framed::new(stream, codec);
    let request = Request {
        version: PROTOCOL_VERSION,
        body,
    };
    let bytes = postcard::to_stdvec(&request).map_err(|e| ClientError::Exchange(e.to_string()))?;
    framed
        .send(Bytes::from(bytes))
        .await
        .map_err(|e| ClientError::Exchange(e.to_string()))?;
    Ok(framed)
}

/// Streams log lines: calls `line` for each until the agent says the end.
pub(crate) async fn logs(
    socket: &Path,
    request: crate::log_service::LogRequest,
    mut line: impl FnMut(&str),
) -> Result<(), ClientError> {
    let mut framed = send_request(socket, RequestBody::Logs(request)).await?;
    while let Some(frame) = framed.next().await {
        let frame = frame.map_err(|e| ClientError::Exchange(e.to_string()))?;
        match postcard::from_bytes::<Response>(&frame) {
            Ok(Response::LogLines(lines)) => lines.iter().for_each(|l| line(l)),
            Ok(Response::LogEnd) => return Ok(()),
            Ok(Response::Error(message)) => return Err(ClientError::Agent(message)),
            Ok(other) => {
                return Err(ClientError::Exchange(format!(
                    "unexpected response {other:?}"
                )));
            }
            Err(e) => return Err(ClientError::Exchange(format!("malformed response: {e}"))),
        }
    }
    Err(ClientError::Exchange(
        "the agent closed the connection".into(),
    ))
}

/// Sends one request and returns the agent's response (an error response
/// becomes [`ClientError::Agent`]).
pub(crate) async fn request(socket: &Path, body: RequestBody) -> Result<Response, ClientError> {
    let exchange = async {
        let mut framed = send_request(socket, body).await?;
        match framed.next().await {
            Some(Ok(frame)) => postcard::from_bytes::<Response>(&frame)
                .map_err(|e| ClientError::Exchange(format!("malformed response: {e}"))),
            Some(Err(e)) => Err(ClientError::Exchange(e.to_string())),
            None => Err(ClientError::Exchange(
                "the agent closed the connection".into(),
            )),
        }
    };
    match tokio::time::timeout(TIMEOUT, exchange).await {
        Err(_) => Err(ClientError::Exchange("timed out".into())),
        Ok(Ok(Response::Error(message))) => Err(ClientError::Agent(message)),
        Ok(result) => result,
    }
}
