package admin

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/imapguard/imapguard/proxy"
)

// fakeFleet answers as proxy/fleet would, and records what it was asked.
type fakeFleet struct {
	asked  []proxy.Match
	reason string
}

var fleetSessions = []proxy.ConnInfo{
	{ID: 3, Client: "127.0.0.2:5000", User: "bob", Authenticated: true, Instance: "a", Since: time.Unix(1, 0)},
	{Client: "127.0.0.3", User: "alice", Authenticated: true, Instance: "b", Since: time.Unix(2, 0)},
}

func (f *fakeFleet) Sessions(ctx context.Context, m proxy.Match) ([]proxy.ConnInfo, string, error) {
	f.asked = append(f.asked, m)
	if m.Address == "nonsense" {
		return nil, "", errors.New("bad address")
	}
	return fleetSessions, "cluster store unreachable: this instance's sessions only", nil
}

func (f *fakeFleet) Kick(ctx context.Context, m proxy.Match, reason string) ([]proxy.ConnInfo, string, error) {
	f.asked, f.reason = append(f.asked, m), reason
	return fleetSessions[1:], "", nil
}

// TestFleetEndpoints: with Options.Fleet, GET /sessions and POST
// /sessions/kick answer from it, with the instance of each session, the
// fleet flag and the note; the proxy's own Select and Kick are not used.
func TestFleetEndpoints(t *testing.T) {
	f := &fakeFleet{}
	_, base := startAdmin(t, Options{Sessions: &fakeSessions{}, Fleet: f})

	var list SessionList
	get(t, base+"/sessions?user=alice").decode(t, http.StatusOK, &list)
	if !list.Fleet || list.Note == "" || list.Count != 2 || list.Sessions[0].Instance != "a" || list.Sessions[1].Instance != "b" ||
		list.Sessions[1].ID != 0 || list.Sessions[1].State != "authenticated" {
		t.Errorf("GET /sessions = %+v; want both instances' sessions, fleet, a note", list)
	}
	if len(f.asked) != 1 || f.asked[0].User != "alice" {
		t.Errorf("the fleet was asked %+v; want alice", f.asked)
	}
	get(t, base+"/sessions?address=nonsense").wantError(t, http.StatusBadRequest)

	var res KickResult
	post(t, base+"/sessions/kick", "application/json", `{"user":"alice","reason":"bye\nnow"}`).decode(t, http.StatusOK, &res)
	if !res.Fleet || res.Note != "" || res.Count != 1 || res.Kicked[0].Instance != "b" || res.Kicked[0].User != "alice" {
		t.Errorf("POST /sessions/kick = %+v; want alice on b, fleet, no note", res)
	}
	if f.reason != "bye now" {
		t.Errorf("the fleet got the reason %q; want it sanitised, %q", f.reason, "bye now")
	}
}
