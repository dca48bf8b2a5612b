// Package wire is Therasync's wire protocol: the JSON frames of the live
// sync WebSocket (DESIGN §7) with the limits a device must respect and the
// close codes that end a connection, and the error codes of DESIGN §6 that
// error answers and reject frames carry. syncd speaks it; the device
// library and the tests read and write it.
package wire

// Limits of the frames a device sends.
const (
	// MaxFrameBytes is the size of the largest frame a device may send (a
	// push with a few signatures fits); a larger one closes the connection
	// with CloseMessageTooBig.
	MaxFrameBytes = 4 << 20
	// MaxMutationsPerPush is how many mutations one push may carry; a push
	// with more is refused whole with a reject.
	MaxMutationsPerPush = 500
)

// The close codes syncd ends a live connection with, and what the device
// does about each.
const (
	// CloseNormalClosure follows a resync frame, or answers the device's
	// own close.
	CloseNormalClosure = 1000
	// CloseGoingAway: the server shuts down; reconnect with backoff.
	CloseGoingAway = 1001
	// ClosePolicyViolation: a newer connection of the same device replaced
	// this one.
	ClosePolicyViolation = 1008
	// CloseMessageTooBig: the device sent a frame over MaxFrameBytes.
	CloseMessageTooBig = 1009
	// CloseInternalServerErr: the server failed; reconnect with backoff.
	CloseInternalServerErr = 1011
	// CloseTryAgainLater: the device did not read fast enough; reconnect
	// and catch up from the cursor.
	CloseTryAgainLater = 1013
	// CloseTokenGone: the token is no longer valid (logged out, or replaced
	// by a newer login of the device); log in again.
	CloseTokenGone = 4001
	// CloseRevoked: the device's access ended (revoked, the account's app
	// access ended, a license withdrawn); keep the data read-only. After a
	// Wipe frame: delete the local data.
	CloseRevoked = 4003
)
