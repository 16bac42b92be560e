//! The js example plugins of `plugins/examples/js`: each is built as its
//! README says and routes live traffic.
