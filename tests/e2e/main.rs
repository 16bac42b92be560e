//! End-to-end tests: the real `refractium` binary, real backends on
//! loopback, real clients (curl, openssl s_client, ssh) where they exist.

mod accept_proxy;
mod admin;
mod balance;
mod check_file;
mod cli;
mod corpus;
mod dashboard;
mod descriptors;
mod dns;
mod examples;
mod examples_c;
mod examples_js;
mod examples_python;
mod haproxy;
mod health;
mod hooks;
mod http_backend;
mod ipv6;
mod kubernetes;
mod lifecycle;
mod logs;
mod metrics;
mod proxy_protocol;
mod reload;
mod routing;
mod sandbox;
mod scaffold;
mod stream;
mod support;
mod systemd;
mod transparent;
mod udp;
mod udp_backend;
