//! Shared harness lives in tests/common.
