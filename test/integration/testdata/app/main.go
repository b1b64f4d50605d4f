// Command app is the workload of the agent and network tests, packed into
// an image by the test:
//
//	app                 print a greeting, answer HTTP on :8080 and UDP on :8081, and wait for
//	                    SIGTERM: / answers "pong", /whoami the client's address as seen here,
//	                    /hostname the pod's hostname, /burn?seconds=N keeps a CPU busy for N s
//	                    (0 stops it); a UDP datagram gets the hostname back
//	app echo WORDS      print WORDS (for kubectl exec)
//	app fill PATH MIB   append MIB mebibytes to PATH and sync (exit 1, saying after how many, on failure)
//	app size PATH       print PATH's size in bytes
//	app get URL         print the body at URL (exit 1 on failure, within 5 s)
//	app resolve NAME    print NAME's addresses, one per line, as the pod's resolver finds them
//	app udp ADDR        send a datagram to ADDR (host:port) and print the reply (exit 1
//	                    without one within 2 s)
//	app query ADDR NAME ask the DNS server at ADDR (host:port, UDP) for NAME's A records
//	                    and print them, one per line (exit 1 without an answer within 2 s)
//	app dns ADDR        an "upstream" DNS server on ADDR: example.test names are 192.0.2.10,
//	                    the rest NXDOMAIN; it logs "query NAME TYPE" to stderr for each question
package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/miekg/dns"
)

func main() {
	if len(os.Args) > 2 {
		if err := command(os.Args[1], os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	fmt.Println("hello from cloudless")
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "pong") })
	mux.HandleFunc("/whoami", func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		fmt.Fprint(w, host)
	})
	mux.HandleFunc("/burn", func(w http.ResponseWriter, r *http.Request) {
		var secs int
		fmt.Sscan(r.URL.Query().Get("seconds"), &secs)
		burnUntil.Store(time.Now().Add(time.Duration(secs) * time.Second).UnixNano())
		go burn()
		fmt.Fprintf(w, "burning for %ds", secs)
	})
	mux.HandleFunc("/hostname", func(w http.ResponseWriter, _ *http.Request) {
		h, _ := os.Hostname()
		fmt.Fprint(w, h)
	})
	go http.ListenAndServe(":8080", mux)
	go serveUDP(":8081")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
}

// burnUntil is when /burn's busy loop stops (Unix ns); /burn?seconds=0
// stops it now.
var (
	burnUntil atomic.Int64
	burning   atomic.Bool
)

// burn keeps one CPU busy until burnUntil.
func burn() {
	if !burning.CompareAndSwap(false, true) {
		return
	}
	defer burning.Store(false)
	for x := 0; time.Now().UnixNano() < burnUntil.Load(); x++ {
		for i := 0; i < 1e5; i++ {
			x ^= i
		}
	}
}

func command(name string, args []string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	switch name {
	case "echo":
		fmt.Println(strings.Join(args, " "))
	case "fill":
		if len(args) != 2 {
			return fmt.Errorf("usage: app fill PATH MIB")
		}
		var mib int
		if _, err := fmt.Sscan(args[1], &mib); err != nil {
			return err
		}
		f, err := os.OpenFile(args[0], os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		chunk := make([]byte, 1<<20)
		for i := 0; i < mib; i++ {
			if _, err := f.Write(chunk); err != nil {
				return fmt.Errorf("after %d MiB: %w", i, err)
			}
		}
		if err := f.Sync(); err != nil {
			return fmt.Errorf("sync: %w", err)
		}
		fmt.Printf("wrote %d MiB\n", mib)
	case "size":
		fi, err := os.Stat(args[0])
		if err != nil {
			return err
		}
		fmt.Println(fi.Size())
	case "get":
		req, err := http.NewRequestWithContext(ctx, "GET", args[0], nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", resp.Status, body)
		}
		fmt.Print(string(body))
	case "udp":
		conn, err := net.Dial("udp", args[0])
		if err != nil {
			return err
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := conn.Write([]byte("hello")); err != nil {
			return err
		}
		buf := make([]byte, 512)
		n, err := conn.Read(buf)
		if err != nil {
			return err
		}
		fmt.Print(string(buf[:n]))
	case "query":
		if len(args) != 2 {
			return fmt.Errorf("usage: app query ADDR NAME")
		}
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(args[1]), dns.TypeA)
		r, _, err := (&dns.Client{Timeout: 2 * time.Second}).Exchange(m, args[0])
		if err != nil {
			return err
		}
		for _, rr := range r.Answer {
			if a, ok := rr.(*dns.A); ok {
				fmt.Println(a.A)
			}
		}
	case "dns":
		dns.HandleFunc(".", func(w dns.ResponseWriter, q *dns.Msg) {
			m := new(dns.Msg)
			m.SetReply(q)
			name := q.Question[0].Name
			fmt.Fprintf(os.Stderr, "query %s %s\n", name, dns.TypeToString[q.Question[0].Qtype])
			switch {
			case !dns.IsSubDomain("example.test.", name):
				m.Rcode = dns.RcodeNameError
			case q.Question[0].Qtype == dns.TypeA:
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.ParseIP("192.0.2.10")})
			}
			w.WriteMsg(m)
		})
		errc := make(chan error, 2)
		go func() { errc <- (&dns.Server{Addr: args[0], Net: "udp"}).ListenAndServe() }()
		go func() { errc <- (&dns.Server{Addr: args[0], Net: "tcp"}).ListenAndServe() }()
		return <-errc
	case "resolve":
		// The pure-Go resolver follows resolv.conf (search, ndots) as libc does.
		r := &net.Resolver{PreferGo: true}
		addrs, err := r.LookupIPAddr(ctx, args[0])
		if err != nil {
			return err
		}
		for _, a := range addrs {
			fmt.Println(a.IP)
		}
	default:
		return fmt.Errorf("unknown command %q", name)
	}
	return nil
}

// serveUDP answers each datagram on addr with the hostname.
func serveUDP(addr string) {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	h, _ := os.Hostname()
	buf := make([]byte, 512)
	for {
		_, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		pc.WriteTo([]byte(h), from)
	}
}
