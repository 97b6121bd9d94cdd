package main

import (
	"cmp"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/imapguard/imapguard/config"
	"github.com/imapguard/imapguard/proxy"
	"github.com/imapguard/imapguard/proxy/admin"
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

// backends prints the upstream backends as a table.
func (c *adminClient) backends(w io.Writer, raw bool) error {
	var list admin.BackendList
	if err := c.get(w, http.MethodGet, "/backends", nil, &list, raw); err != nil || raw {
		return err
	}
	if len(list.Backends) == 0 {
		_, err := fmt.Fprintf(w, "route %s: one upstream (upstream.address), no backends\n", printable(list.Route))
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tADDRESS\tWEIGHT\tSTATE\tFAILURES\tLAST PROBE\tSESSIONS\tLAST ERROR")
	for _, b := range list.Backends {
		probe, lastErr := "-", "-"
		if b.LastProbe != nil {
			probe = b.LastProbe.UTC().Format(time.RFC3339)
		}
		if b.LastError != "" {
			lastErr = b.LastError
		}
		fmt.Fprintf(tw, "%s\t%s\t%g\t%s\t%d\t%s\t%d\t%s\n", printable(b.Name), printable(b.Address), b.Weight,
			printable(b.State), b.Failures, probe, b.Sessions, printable(lastErr))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "route %s: %s\n", printable(list.Route), plural(len(list.Backends), "backend"))
	return err
}
