//! The programs' return codes as BPF_PROG_TEST_RUN reports them (a u32): edgeflow only
//! observes, so these are the only ones a test run may return.

/// XDP_PASS.
pub const XDP_PASS: u32 = 2;
/// TC_ACT_UNSPEC (-1), TCX_NEXT: no verdict, the next program on the hook runs.
pub const TC_ACT_UNSPEC: u32 = u32::MAX;
