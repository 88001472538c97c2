//! The edge: what happens before a request's body is trusted. Connections
//! are accepted and served ([`listener`], with [`tls`]), the API key names
//! the tenant ([`auth`]), the tenant's rates and the node's in-flight cap
//! admit or refuse the request before its body is read ([`limit`]), and the
//! body is read under its caps and decompressed ([`body`]).

pub mod auth;
pub mod body;
mod connection;
pub mod limit;
pub mod listener;
pub mod tls;
pub mod unread;
