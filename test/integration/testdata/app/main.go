// Command app is the workload of the agent tests, packed into an image by
// the test: with no arguments it prints a greeting, answers "pong" on
// :8080 (for port-forward) and waits for SIGTERM; `app echo WORDS` prints
// WORDS (for kubectl exec).
package main

import (
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	if len(os.Args) > 2 && os.Args[1] == "echo" {
		fmt.Println(strings.Join(os.Args[2:], " "))
		return
	}
	fmt.Println("hello from cloudless")
	go http.ListenAndServe(":8080", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, "pong")
	}))
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
}
