//! The close and error codes defined in Rust agree with fixtures/codes.json,
//! which the JS SDK's tests check too.

use edgewire::error::ApiError;
use edgewire::protocol::CloseCode;
use serde_json::Value;

use crate::harness::fixtures;

#[test]
fn codes_agree_with_the_shared_fixture() {
    let table: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("codes.json")).unwrap())
            .unwrap();
    let close = table["close_codes"].as_object().unwrap();
    assert_eq!(close.len(), CloseCode::ALL.len());
    for code in CloseCode::ALL {
        assert_eq!(
            close[code.name()],
            u64::from(code.code()),
            "{}",
            code.name()
        );
    }
    let errors = table["error_codes"].as_object().unwrap();
    let ours = ApiError::one_of_each();
    assert_eq!(errors.len(), ours.len());
    for e in ours {
        assert_eq!(
            errors[e.code()],
            u64::from(e.status().as_u16()),
            "{}",
            e.code()
        );
    }
}
