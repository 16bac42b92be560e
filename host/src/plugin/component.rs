//! Plugin files called through the component layer, synchronously.
//!
//! A file is linked with the imports [`super::imports`] grants it and
//! pre-instantiated once per snapshot; its exports are called through the
//! generated bindings ([`super::bindings`]).
//!
//! What a plugin hands the host is bounded twice. While it is read out of
//! the guest's memory, no call may copy more than [`COPY_LIMIT`] bytes
//! (wasmtime's hostcall fuel, which counts each string and list before it is
//! copied): a verdict of 100,000 attributes, or of entries that all point at
//! one large string, fails there, having cost nothing. What was read is then
//! held to the output bounds of [`super::sandbox`] ([`Bounds`]).

use super::bindings::refractium::plugin::types as wit;
use super::bindings::{DetectorPlugin as Bindings, DetectorPluginPre};
use super::detector::{Detection, Info, Peer, Verdict};
use super::sandbox::{Bounds, HostState, MAX_ALPN, MAX_ATTRIBUTES, MAX_STRING};
use anyhow::Context as _;
use wasmtime::Store;
use wasmtime::component::{Component, InstancePre};

/// Most bytes one call may copy out of a plugin: an export's answer, or an
/// import's arguments (the `crypto` interface takes up to 64 KiB).
pub const COPY_LIMIT: usize = 96 << 10;

/// A plugin file, linked and ready to instantiate.
pub struct Pre(DetectorPluginPre<HostState>);

/// One instance's exports.
pub struct Exports(Bindings);

/// Whether `component` exports the detector interface, and the hook one.
pub fn kinds(component: &Component) -> (bool, bool) {
    let exports = |name| component.get_export_index(None, name).is_some();
    (exports("refractium:plugin/detector@0.1.0"), exports("refractium:plugin/hook@0.1.0"))
}

/// Link `component` (see [`super::imports`]) and pre-instantiate it; the
/// names of the interfaces it imports that are refused at the call come
/// back too.
pub fn link(component: &Component) -> anyhow::Result<(InstancePre<HostState>, Vec<String>)> {
    let linked = super::imports::link(component)?;
    let pre = linked.linker.instantiate_pre(component).map_err(anyhow::Error::from).context("linking")?;
    Ok((pre, linked.refused))
}

impl Pre {
    /// The detector exports of a linked component.
    pub fn new(pre: InstancePre<HostState>) -> anyhow::Result<Pre> {
        let pre = DetectorPluginPre::new(pre)
            .map_err(anyhow::Error::from)
            .context("it does not export the refractium:plugin/detector@0.1.0 interface")?;
        Ok(Pre(pre))
    }

    /// A fresh instance in `store`.
    pub fn instantiate(&self, store: &mut Store<HostState>) -> wasmtime::Result<Exports> {
        store.set_hostcall_fuel(COPY_LIMIT);
        Ok(Exports(self.0.instantiate(&mut *store)?))
    }
}

impl Exports {
    /// `init(config) -> result<plugin-info, string>`; a refusal longer than
    /// a bounded string is cut.
    pub fn init(&self, store: &mut Store<HostState>, config: &str) -> wasmtime::Result<Result<Info, String>> {
        Ok(match self.0.refractium_plugin_detector().call_init(&mut *store, config)? {
            Ok(info) => {
                let mut bounds = Bounds::default();
                bounds.string("name", info.name.len())?;
                bounds.string("version", info.version.len())?;
                Ok(Info { name: info.name, version: info.version })
            }
            Err(refusal) => Err(super::sandbox::truncate(&refusal, MAX_STRING).to_string()),
        })
    }

    /// `detect(data, peer) -> verdict`, with the attributes `peer` wants.
    pub fn detect(&self, store: &mut Store<HostState>, data: &[u8], peer: &Peer) -> wasmtime::Result<Verdict> {
        Ok(match self.0.refractium_plugin_detector().call_detect(&mut *store, data, &peer.to_wit())? {
            wit::Verdict::NoMatch => Verdict::NoMatch,
            wit::Verdict::NeedMore(n) => Verdict::NeedMore(n),
            wit::Verdict::Matched(d) => Verdict::Matched(bounded(d, peer)?),
        })
    }
}

/// The detection `d`, held to the output bounds, with the attributes `peer`
/// wants.
fn bounded(d: wit::Detection, peer: &Peer) -> wasmtime::Result<Detection> {
    Bounds::count("ALPN entries", d.alpn.len(), MAX_ALPN)?;
    Bounds::count("attributes", d.attributes.len(), MAX_ATTRIBUTES)?;
    let mut bounds = Bounds::default();
    bounds.string("protocol", d.protocol.len())?;
    if let Some(sni) = &d.sni {
        bounds.string("SNI", sni.len())?;
    }
    for entry in &d.alpn {
        bounds.string("ALPN entry", entry.len())?;
    }
    for (key, value) in &d.attributes {
        bounds.string("attribute key", key.len())?;
        bounds.string("attribute value", value.len())?;
    }
    let mut attributes = d.attributes;
    attributes.retain(|(key, _)| peer.wanted().wants(key.as_bytes()));
    Ok(Detection { protocol: d.protocol, sni: d.sni, alpn: d.alpn, attributes })
}
