package proxy

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// TestOAuthUser: the user an OAuth initial response logs in as, and the
// malformed ones, by rule.
func TestOAuthUser(t *testing.T) {
	const bearer = "\x01host=mail.example.com\x01port=993\x01auth=Bearer vF9dft4qmT\x01\x01"
	for _, tc := range []struct {
		name, mech, resp, user string
		err                    error
	}{
		{"RFC 7628 §4.1", mechOAuthBearer, "n,a=user@example.com," + bearer, "user@example.com", nil},
		{"y flag", mechOAuthBearer, "y,a=alice," + bearer, "alice", nil},
		{"escapes", mechOAuthBearer, "n,a=b=2Co=3Db,\x01auth=bearer t\x01\x01", "b,o=b", nil},
		{"no authzid", mechOAuthBearer, "n,," + bearer, "", errOAuthNoUser},
		{"empty authzid", mechOAuthBearer, "n,a=," + bearer, "", errOAuthNoUser},
		{"bad escape", mechOAuthBearer, "n,a=a=2D," + bearer, "", errOAuthSASLName},
		{"trailing =", mechOAuthBearer, "n,a=a=2," + bearer, "", errOAuthSASLName},
		{"channel binding", mechOAuthBearer, "p=tls-unique,a=alice," + bearer, "", errOAuthChanBind},
		{"bad flag", mechOAuthBearer, "x,a=alice," + bearer, "", errOAuthGS2Header},
		{"no GS2 header", mechOAuthBearer, "alice", "", errOAuthGS2Header},
		{"authzid without a=", mechOAuthBearer, "n,alice," + bearer, "", errOAuthGS2Header},
		{"no auth", mechOAuthBearer, "n,a=alice,\x01host=x\x01\x01", "", errOAuthBearer},
		{"two auths", mechOAuthBearer, "n,a=alice,\x01auth=Bearer a\x01auth=Bearer b\x01\x01", "", errOAuthBearer},
		{"empty token", mechOAuthBearer, "n,a=alice,\x01auth=Bearer \x01\x01", "", errOAuthBearer},
		{"not bearer", mechOAuthBearer, "n,a=alice,\x01auth=Basic dXNlcg==\x01\x01", "", errOAuthBearer},
		{"no final ^A", mechOAuthBearer, "n,a=alice,\x01auth=Bearer t\x01", "", errOAuthBearer},
		{"pair without =", mechOAuthBearer, "n,a=alice,\x01host\x01auth=Bearer t\x01\x01", "", errOAuthBearer},
		{"control in user", mechOAuthBearer, "n,a=al\x00ice," + bearer, "", errOAuthControlled},
		{"XOAUTH2", mechXOAuth2, "user=someuser@example.com\x01auth=Bearer ya29.vF9dft4qmT\x01\x01", "someuser@example.com", nil},
		{"XOAUTH2 comma kept", mechXOAuth2, "user=b,o=b\x01auth=Bearer t\x01\x01", "b,o=b", nil},
		{"XOAUTH2 no user", mechXOAuth2, "user=\x01auth=Bearer t\x01\x01", "", errOAuthNoUser},
		{"XOAUTH2 no user=", mechXOAuth2, "alice\x01auth=Bearer t\x01\x01", "", errOAuthXOAuth2},
		{"XOAUTH2 no ^A", mechXOAuth2, "user=alice", "", errOAuthXOAuth2},
		{"XOAUTH2 one final ^A", mechXOAuth2, "user=alice\x01auth=Bearer t\x01", "", errOAuthXOAuth2},
		{"XOAUTH2 tab in user", mechXOAuth2, "user=a\tb\x01auth=Bearer t\x01\x01", "", errOAuthControlled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			user, err := oauthUser(tc.mech, []byte(tc.resp))
			if user != tc.user || !errors.Is(err, tc.err) {
				t.Errorf("got %q, %v; want %q, %v", user, err, tc.user, tc.err)
			}
		})
	}
}

// FuzzOAuthUser: no input panics; a user is returned only with no
// error, is not empty and holds no control character; errors are the
// fixed ones, never made of the input.
func FuzzOAuthUser(f *testing.F) {
	for _, s := range []string{
		"n,a=user@example.com,\x01host=server.example.com\x01port=143\x01auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01",
		"n,a=b=2Co=3Db,\x01auth=Bearer t\x01\x01",
		"user=someuser@example.com\x01auth=Bearer ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg\x01\x01",
		"p=tls-unique,,\x01\x01", "n,,", "\x01\x01", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		for _, mech := range oauthMechanisms {
			user, err := oauthUser(mech, []byte(in))
			if (err == nil) == (user == "") {
				t.Fatalf("%s %q: got user %q, error %v", mech, in, user, err)
			}
			if strings.ContainsFunc(user, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
				t.Fatalf("%s %q: user %q holds a control character", mech, in, user)
			}
			// Only the fixed errors, which cannot hold the input (the token).
			if err != nil && !slices.Contains([]error{errOAuthGS2Header, errOAuthNoUser, errOAuthSASLName,
				errOAuthBearer, errOAuthXOAuth2, errOAuthChanBind, errOAuthControlled}, err) {
				t.Fatalf("%s %q: error %v is not one of the fixed ones", mech, in, err)
			}
		}
	})
}
