// Command app is the workload of the agent tests, packed into an image by
// the test: with no arguments it prints a greeting and waits for SIGTERM;
// `app echo WORDS` prints WORDS (for kubectl exec).
package main

import (
	"fmt"
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
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
}
