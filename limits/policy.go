package limits

import (
	"net/netip"
	"slices"
)

// Override changes some caps for some users or client networks: one
// [[limits.override]] entry of the configuration. It matches a user at an
// address when each selector it has matches: Users (compared as UserKey
// does) holds the user, Networks holds the address. An entry has at
// least one selector; one without either matches nobody. A zero cap is
// not set by the entry and leaves the cap to the other entries or to
// Options.
//
// # Which override applies
//
// Each cap is decided on its own: among the entries that set that cap
// and match, the one that wins is
//
//  1. an entry with both users and networks, before
//  2. an entry with users only, before
//  3. an entry with networks only;
//  4. within 1 and 3, the entry whose matching network is the longest
//     prefix (the most specific);
//  5. then the first in the file.
//
// So a user's own entry beats a network's entry, and "this user from that
// network" beats both.
//
// max_connections_per_ip and max_connection_rate_per_ip are checked when
// a connection arrives, before anyone has logged in: only entries with
// networks and no users can set them (an entry with users never matches
// there). max_connections_per_user and max_connections_per_user_ip are
// checked at login, with the user and the address the session comes
// from: an entry with networks only then sets them for every user logging
// in from those networks.
type Override struct {
	Users                   []string
	Networks                []netip.Prefix
	MaxConnectionsPerIP     int
	MaxConnectionsPerUser   int
	MaxConnectionsPerUserIP int
	MaxConnectionRatePerIP  float64
}

// A capKind is one of the caps an Override may set.
type capKind uint8

const (
	capPerIP capKind = iota
	capPerUser
	capPerUserIP
	capRate
	numCaps
)

// policy is Options' overrides and exemptions, compiled for matching.
// It is immutable once made, and replaced whole by SetOptions.
type policy struct {
	opts      Options
	overrides []override
	exemptNet []netip.Prefix
}

type override struct {
	users    map[string]bool // nil: any user
	networks []netip.Prefix  // nil: any address
	caps     [numCaps]float64
}

func newPolicy(opts Options) *policy {
	p := &policy{opts: opts}
	for _, n := range opts.ExemptNetworks {
		p.exemptNet = append(p.exemptNet, canonicalPrefix(n))
	}
	for _, o := range opts.Overrides {
		e := override{caps: [numCaps]float64{
			capPerIP:     float64(max(o.MaxConnectionsPerIP, 0)),
			capPerUser:   float64(max(o.MaxConnectionsPerUser, 0)),
			capPerUserIP: float64(max(o.MaxConnectionsPerUserIP, 0)),
			capRate:      max(o.MaxConnectionRatePerIP, 0),
		}}
		if len(o.Users) == 0 && len(o.Networks) == 0 {
			continue // matches nobody
		}
		if len(o.Users) > 0 {
			e.users = make(map[string]bool, len(o.Users))
			for _, u := range o.Users {
				e.users[UserKey(u)] = true
			}
		}
		for _, n := range o.Networks {
			e.networks = append(e.networks, canonicalPrefix(n))
		}
		p.overrides = append(p.overrides, e)
	}
	return p
}

// canonicalPrefix unmaps an IPv4-mapped prefix (::ffff:192.0.2.0/120 is
// 192.0.2.0/24), as AddrKey unmaps addresses, and masks it.
func canonicalPrefix(n netip.Prefix) netip.Prefix {
	if a := n.Addr(); a.Is4In6() && n.Bits() >= 96 {
		n = netip.PrefixFrom(a.Unmap(), n.Bits()-96)
	}
	return n.Masked()
}

// longestMatch returns the length of the longest of networks that holds
// addr, or -1.
func longestMatch(networks []netip.Prefix, addr netip.Addr) int {
	best := -1
	for _, n := range networks {
		if n.Contains(addr) {
			best = max(best, n.Bits())
		}
	}
	return best
}

// value returns the cap k for user (canonical; "" with hasUser false when
// not known yet) at addr: that of the override that wins by the rule of
// Override, or def when none sets it.
func (p *policy) value(k capKind, user string, hasUser bool, addr netip.Addr, def float64) float64 {
	addr = addr.Unmap().WithZone("")
	const none = 3
	bestRank, bestBits, found := none, -1, def
	for _, e := range p.overrides {
		if e.caps[k] == 0 {
			continue
		}
		rank, bits := 2, -1
		if e.users != nil {
			if !hasUser || !e.users[user] {
				continue
			}
			rank = 1
		}
		if e.networks != nil {
			if bits = longestMatch(e.networks, addr); bits < 0 {
				continue
			}
			if e.users != nil {
				rank = 0
			}
		}
		// Strictly better only: on a tie the earlier entry stays.
		if rank < bestRank || rank == bestRank && bits > bestBits {
			bestRank, bestBits, found = rank, bits, e.caps[k]
		}
	}
	return found
}

func (p *policy) perIP(addr netip.Addr) int {
	return int(p.value(capPerIP, "", false, addr, float64(p.opts.MaxConnectionsPerIP)))
}

func (p *policy) rate(addr netip.Addr) float64 {
	return p.value(capRate, "", false, addr, p.opts.MaxConnectionRatePerIP)
}

func (p *policy) perUser(user string, addr netip.Addr) int {
	return int(p.value(capPerUser, user, true, addr, float64(p.opts.MaxConnectionsPerUser)))
}

func (p *policy) perUserIP(user string, addr netip.Addr) int {
	return int(p.value(capPerUserIP, user, true, addr, float64(p.opts.MaxConnectionsPerUserIP)))
}

// exempt reports whether addr is in an exempt network.
func (p *policy) exempt(addr netip.Addr) bool {
	addr = addr.Unmap().WithZone("")
	return slices.ContainsFunc(p.exemptNet, func(n netip.Prefix) bool { return n.Contains(addr) })
}
