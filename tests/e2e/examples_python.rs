//! The python example plugins of `plugins/examples/python`: each is built as its
//! README says and routes live traffic.
