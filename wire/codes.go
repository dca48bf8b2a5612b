package wire

// The error codes of DESIGN §6 and of the step-up that syncd answers with:
// the "error" of an error answer (`{"error": CODE, "message": TEXT}`) and of
// a reject frame.
const (
	// CodeUnauthorized: a missing or invalid practice key or device token.
	CodeUnauthorized = "unauthorized"
	// CodeInvalidCode: a wrong, expired or used access code, or an unknown
	// email (they look the same).
	CodeInvalidCode = "invalid_code"
	// CodeTooManyAttempts: a rate limit or lockout (429, often with
	// Retry-After).
	CodeTooManyAttempts = "too_many_attempts"
	// CodeAppDisabled: the account has no app access.
	CodeAppDisabled = "app_disabled"
	// CodeLicenseMissing: the tenant lacks the license the request needs.
	CodeLicenseMissing = "license_missing"
	// CodeNoEmail: the account has no valid email address for a code.
	CodeNoEmail = "no_email"
	// CodeShardNotReady: the account's shard is not built yet (Retry-After).
	CodeShardNotReady = "shard_not_ready"
	// CodeDeviceRevoked: the device's access was withdrawn (403).
	CodeDeviceRevoked = "device_revoked"
	// CodeTOTPRequired: the request needs a current TOTP code of an
	// enrolled admin.
	CodeTOTPRequired = "totp_required"
	// CodeForbidden: the account may not do or write this.
	CodeForbidden = "forbidden"
	// CodeErased: a device's write would bring back a row the practice
	// erased (GDPR Art. 17): the creation of an erased row, or a row naming
	// one that nobody created again (a write queued offline before the
	// erasure). It is a reject frame's error only; the client library drops
	// the write, and what it kept of the row, instead of keeping it as
	// rejected. A member's write to a row it does not see is refused
	// `forbidden` with the same words whatever the reason, erased or not.
	CodeErased = "erased"
	// CodeBadRequest: an invalid request, change or frame; the message says
	// what is wrong.
	CodeBadRequest = "bad_request"
	// CodeNotFound: no such resource.
	CodeNotFound = "not_found"
	// CodeConflict: the request conflicts with the rows as they are.
	CodeConflict = "conflict"
	// CodeAlreadyCheckedIn: the participant is already checked in to that
	// course on that date.
	CodeAlreadyCheckedIn = "already_checked_in"
	// CodeCourseFull: a Springer's check-in to a course whose seats are
	// taken.
	CodeCourseFull = "course_full"
	// CodeNoUnitsLeft: a check-in of a participant whose own course
	// membership has no units left; the front desk needs a new
	// prescription (409).
	CodeNoUnitsLeft = "no_units_left"
	// CodeTooLarge: the request body exceeds the limit (413).
	CodeTooLarge = "too_large"
	// CodeRequestTimeout: the request body did not arrive in time (408).
	CodeRequestTimeout = "request_timeout"
	// CodeInternal: the server failed.
	CodeInternal = "internal"
	// CodeUnavailable: the server is shutting down (503).
	CodeUnavailable = "unavailable"
	// CodeHistoryChanged: the practice pull's history is not the log's
	// (a restore or an erasure rewrote it): 409 with the new history id
	// and head seq; pull again from a fresh copy.
	CodeHistoryChanged = "history_changed"
	// CodeHistoryCompacted: the practice pull's since is below the log's
	// compacted_to (its changes may be gone): 410 with compacted_to.
	CodeHistoryCompacted = "history_compacted"
)
