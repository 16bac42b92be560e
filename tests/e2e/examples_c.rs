//! The c example plugins of `plugins/examples/c`: each is built as its
//! README says and routes live traffic.
