#![allow(dead_code, unused_variables)]
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
pub struct MxHost {
    pub name: String,
    pub preference: u16,
    pub addresses: Vec<IpAddr>,
}
pub enum RouteError {
    Permanent {
        status: &'static str,
        message: String,
    },
    Temporary {
        message: String,
    },
}
pub struct Resolver;
impl Resolver {
    pub fn new(server: Option<SocketAddr>, timeout: Duration) -> crate::error::Result<Resolver> {
        todo!()
    }
    pub fn mx_hosts(&self, domain: &str) -> Result<Vec<MxHost>, RouteError> {
        todo!()
    }
}
