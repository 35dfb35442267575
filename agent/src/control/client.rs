//! The CLI's side of the control socket: [`Client`], one typed method per
//! request, so the subcommands never match responses by hand.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use mob_scheduler::ServiceSpec;
use mob_scheduler::history::History;
use mob_scheduler::node::Deployed;
use mob_scheduler::node::keyring::KeyView;
use mob_scheduler::services_view::ServiceView;

use crate::events::EventLine;
use tokio::net::UnixStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use super::protocol::{
    KeysRequest, MAX_FRAME, MemberReport, PROTOCOL_VERSION, Request, RequestBody, Response,
    StatsReport, Verb,
};
use crate::log_service::LogRequest;

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
    /// The exchange failed midway, or the answer was not the one asked for.
    #[error("control request failed: {0}")]
    Exchange(String),
    /// The agent answered with an error.
    #[error("{0}")]
    Agent(String),
}

type ControlFramed = Framed<UnixStream, LengthDelimitedCodec>;

/// A connection-per-request client of one agent's control socket.
pub(crate) struct Client {
    socket: PathBuf,
}

/// Unwraps the one response variant a request expects.
macro_rules! expect {
    ($response:expr, $variant:pat => $value:expr) => {
        match $response {
            $variant => Ok($value),
            other => Err(ClientError::Exchange(format!(
                "unexpected response {other:?}"
            ))),
        }
    };
}

impl Client {
    /// A client of the agent listening at `socket`.
    pub(crate) fn new(socket: PathBuf) -> Self {
        Self { socket }
    }

    /// The member list, this node first.
    pub(crate) async fn members(&self) -> Result<Vec<MemberReport>, ClientError> {
        expect!(self.request(RequestBody::Members).await?, Response::Members(m) => m)
    }

    /// The agent's counters.
    pub(crate) async fn stats(&self) -> Result<StatsReport, ClientError> {
        expect!(self.request(RequestBody::Stats).await?, Response::Stats(s) => s)
    }

    /// Adds or updates services; per service, what was written.
    pub(crate) async fn deploy(
        &self,
        specs: Vec<ServiceSpec>,
    ) -> Result<Vec<Deployed>, ClientError> {
        expect!(self.request(RequestBody::Deploy(specs)).await?, Response::Deployed(d) => d)
    }

    /// Removes a service; the version written.
    pub(crate) async fn remove(&self, name: String) -> Result<u64, ClientError> {
        expect!(self.request(RequestBody::Remove(name)).await?, Response::Written(v) => v)
    }

    /// Sets a service's replicas; the version written.
    pub(crate) async fn scale(&self, name: String, replicas: u32) -> Result<u64, ClientError> {
        expect!(self.request(RequestBody::Scale(name, replicas)).await?, Response::Written(v) => v)
    }

    /// Stops, starts, restarts or rolls back a service; the version
    /// written.
    pub(crate) async fn verb(&self, name: String, verb: Verb) -> Result<u64, ClientError> {
        expect!(self.request(RequestBody::Verb(name, verb)).await?, Response::Written(v) => v)
    }

    /// A service's kept versions.
    pub(crate) async fn history(&self, name: String) -> Result<Option<History>, ClientError> {
        expect!(self.request(RequestBody::History(name)).await?, Response::History(h) => h)
    }

    /// Every live service with its slots.
    pub(crate) async fn services(&self) -> Result<Vec<ServiceView>, ClientError> {
        expect!(self.request(RequestBody::Services).await?, Response::Services(s) => s)
    }

    /// Drains this node, or `node` (`true`), or undoes it.
    pub(crate) async fn drain(&self, node: Option<String>, on: bool) -> Result<(), ClientError> {
        let body = match node {
            Some(node) => RequestBody::DrainNode(node, on),
            None => RequestBody::Drain(on),
        };
        expect!(self.request(body).await?, Response::Ok => ())
    }

    /// Forgets a down or left node now.
    pub(crate) async fn force_leave(&self, node: String) -> Result<(), ClientError> {
        expect!(self.request(RequestBody::ForceLeave(node)).await?, Response::Ok => ())
    }

    /// The live members, and the keys and who holds them.
    pub(crate) async fn keys(&self) -> Result<(Vec<String>, Vec<KeyView>), ClientError> {
        expect!(
            self.request(RequestBody::Keys(KeysRequest::List)).await?,
            Response::Keys(members, keys) => (members, keys)
        )
    }

    /// A keyring change for the whole cluster.
    pub(crate) async fn change_keys(&self, request: KeysRequest) -> Result<(), ClientError> {
        expect!(self.request(RequestBody::Keys(request)).await?, Response::Ok => ())
    }

    /// Streams log lines: calls `line` for each until the agent says the end.
    pub(crate) async fn logs(
        &self,
        request: LogRequest,
        mut line: impl FnMut(&str),
    ) -> Result<(), ClientError> {
        let mut framed = self.send(RequestBody::Logs(request)).await?;
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

    /// Joins the agent to the agents at `addrs`: the names of those that
    /// answered.
    pub(crate) async fn join(
        &self,
        addrs: Vec<std::net::SocketAddr>,
    ) -> Result<Vec<String>, ClientError> {
        expect!(self.request(RequestBody::Join(addrs)).await?, Response::Joined(names) => names)
    }

    /// Streams the agent's events: calls `event` for each (and `missed`
    /// when this client fell behind) until the agent ends.
    pub(crate) async fn events(
        &self,
        mut event: impl FnMut(&EventLine),
        mut missed: impl FnMut(u64),
    ) -> Result<(), ClientError> {
        let mut framed = self.send(RequestBody::Events).await?;
        while let Some(frame) = framed.next().await {
            let frame = frame.map_err(|e| ClientError::Exchange(e.to_string()))?;
            match postcard::from_bytes::<Response>(&frame) {
                Ok(Response::Event(line)) => event(&line),
                Ok(Response::EventsMissed(n)) => missed(n),
                Ok(Response::Error(message)) => return Err(ClientError::Agent(message)),
                Ok(other) => {
                    return Err(ClientError::Exchange(format!(
                        "unexpected response {other:?}"
                    )));
                }
                Err(e) => return Err(ClientError::Exchange(format!("malformed response: {e}"))),
            }
        }
        Ok(())
    }

    /// Connects and sends one request.
    async fn send(&self, body: RequestBody) -> Result<ControlFramed, ClientError> {
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ClientError::Connect {
                    path: self.socket.display().to_string(),
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
        let bytes =
            postcard::to_stdvec(&request).map_err(|e| ClientError::Exchange(e.to_string()))?;
        framed
            .send(Bytes::from(bytes))
            .await
            .map_err(|e| ClientError::Exchange(e.to_string()))?;
        Ok(framed)
    }

    /// Sends one request and returns the agent's response (an error
    /// response becomes [`ClientError::Agent`]).
    async fn request(&self, body: RequestBody) -> Result<Response, ClientError> {
        let exchange = async {
            let mut framed = self.send(body).await?;
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
}
