package probe

import (
	"errors"
	"fmt"
)

// ID is a 16-bit probe id: id = ttl | attempt<<8, ttl 1..255, attempt 0..254
// (DESIGN.md, "Flows and probe ids"). A valid ID is never 0 (ttl 0) and never
// 0xffff (attempt 255), the two values that are special as UDP checksums.
type ID uint16

// MaxAttempt is the largest attempt number an ID can carry.
const MaxAttempt = 254

// Errors returned by MakeID.
var (
	ErrZeroTTL    = errors.New("probe: ttl 0 cannot be encoded in a probe id")
	ErrAttempt255 = errors.New("probe: attempt 255 cannot be encoded in a probe id (max 254)")
)

// MakeID returns ttl | attempt<<8, or an error for ttl 0 or attempt 255.
func MakeID(ttl uint8, attempt uint8) (ID, error) {
	if ttl == 0 {
		return 0, ErrZeroTTL
	}
	if attempt == 255 {
		return 0, ErrAttempt255
	}
	return ID(ttl) | ID(attempt)<<8, nil
}

// TTL returns the TTL (hop limit) the id was made for.
func (id ID) TTL() uint8 { return uint8(id) }

// Attempt returns the attempt number the id was made for.
func (id ID) Attempt() uint8 { return uint8(id >> 8) }

// Valid reports whether id could have been made by MakeID.
func (id ID) Valid() bool { return uint8(id) != 0 && uint8(id>>8) != 255 }

// String formats the id as "ttl/attempt (0xNNNN)".
func (id ID) String() string {
	return fmt.Sprintf("%d/%d (%#04x)", id.TTL(), id.Attempt(), uint16(id))
}
