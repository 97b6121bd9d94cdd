package main

import (
	"cmp"
	"fmt"
	"strings"
	"time"

	"github.com/imapguard/imapguard/config"
	"github.com/imapguard/imapguard/proxy"
	imaptls "github.com/imapguard/imapguard/tls"
)

// routeOptions maps upstream.route, its map file, its health checks and
// the [[upstream.backend]] entries onto o (issue 13). A backend's TLS
// keys default to [upstream]'s. The map file is read here too, so that
// a start or a reload with a file that is wrong fails with the reason.
func routeOptions(c *config.Config, o *proxy.Options) error {
	u := &c.Upstream
	o.Route = u.Route
	o.HealthInterval = time.Duration(u.HealthInterval)
	o.UnhealthyAfter = u.UnhealthyAfter
	o.HealthyAfter = u.HealthyAfter
	if u.Route == proxy.RouteSingle {
		return nil
	}
	for i, b := range u.Backend {
		pb := proxy.Backend{Name: b.Name, Addr: b.Address, Weight: float64(b.Weight), TLS: cmp.Or(b.TLS, u.TLS)}
		if pb.TLS != "none" {
			cfg, err := imaptls.UpstreamConfig(imaptls.UpstreamOptions{
				ServerName:         b.ServerName, // else the host of its address, as for upstream.address
				CAFile:             cmp.Or(b.CAFile, u.CAFile),
				InsecureSkipVerify: b.InsecureSkipVerify || u.InsecureSkipVerify,
				CertFile:           cmp.Or(b.CertFile, u.CertFile),
				KeyFile:            cmp.Or(b.KeyFile, u.KeyFile),
			})
			if err != nil {
				return fmt.Errorf("upstream.backend[%d]: %w", i+1, err)
			}
			if b.ServerName == "" && u.ServerName != "" {
				cfg.ServerName = u.ServerName
			}
			pb.TLSConfig = cfg
		}
		o.Backends = append(o.Backends, pb)
	}
	if u.Route == proxy.RouteMap {
		if _, err := proxy.ReadRouteMap(u.MapFile, o.Backends); err != nil {
			return fmt.Errorf("upstream.map_file: %w", err)
		}
		o.RouteMapFile = u.MapFile
	}
	return nil
}

// upstreamDesc is the upstream for the start's log line: its address,
// or the route and the backends' names.
func upstreamDesc(c *config.Config) string {
	u := &c.Upstream
	if u.Route == proxy.RouteSingle {
		return u.Address
	}
	names := make([]string, 0, len(u.Backend))
	for _, b := range u.Backend {
		names = append(names, cmp.Or(b.Name, b.Address))
	}
	return u.Route + ":" + strings.Join(names, ",")
}
