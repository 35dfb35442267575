//! The control API: a unix socket in the data dir (mode 0600) carrying
//! versioned postcard frames (tokio-util `LengthDelimitedCodec`).
//!
//! - [`protocol`]: `Request` / `Response` and the protocol version.
//! - [`server`]: the agent's side, one task per connection.
//! - [`client`]: what the CLI subcommands call.

pub(crate) mod client;
pub(crate) mod protocol;
pub(crate) mod server;
