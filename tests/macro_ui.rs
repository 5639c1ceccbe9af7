//! `#[pgclone::test]`: what compiles, and the errors for what does not (each pointing at the
//! offending argument).

#[test]
fn macro_accepts_valid_tests_and_points_at_bad_arguments() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}
