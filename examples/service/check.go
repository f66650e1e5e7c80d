package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// The check's requests for each combination: some one after another, the
// rest from several goroutines at once.
const (
	checkSequential = 20
	checkClients    = 10
	checkEach       = 3 // requests a concurrent client sends
)

// runCheck starts the service on loopback in every mode and backend,
// checks its answers, prints one line for each, and stops it again. It
// returns an error if any answer was wrong.
func runCheck(out io.Writer, base config) error {
	var failed []string
	for _, be := range backends {
		for _, mode := range modes {
			cfg := base
			cfg.mode, cfg.backend = mode, be
			t := time.Now()
			n, err := checkOne(cfg)
			name := fmt.Sprintf("%-6s %-9s", be, mode)
			if err != nil {
				fmt.Fprintf(out, "FAIL %s %v\n", name, err)
				failed = append(failed, name)
				continue
			}
			fmt.Fprintf(out, "ok   %s %d requests, all 200 with the right JSON, %v\n", name, n, time.Since(t).Round(time.Millisecond))
		}
	}
	if failed != nil {
		return fmt.Errorf("check failed: %v", failed)
	}
	return nil
}

// checkOne starts the service, sends its requests, stops it, and returns
// how many requests it sent.
func checkOne(cfg config) (n int, err error) {
	s, err := start(cfg, "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	tr := &http.Transport{MaxIdleConnsPerHost: checkClients}
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	defer func() {
		tr.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err = errors.Join(err, s.shutdown(ctx))
	}()
	base := "http://" + s.addr() + "/item?id="
	idOf := func(i int) int64 { return 1 + int64(i)*997%nRows }

	for i := range checkSequential {
		if err := checkItem(client, base, idOf(i), cfg.work); err != nil {
			return n, err
		}
		n++
	}
	var wg sync.WaitGroup
	errs := make([]error, checkClients)
	for c := range checkClients {
		wg.Go(func() {
			for j := range checkEach {
				if err := checkItem(client, base, idOf(checkSequential+c*checkEach+j), cfg.work); err != nil {
					errs[c] = err
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return n, err
	}
	n += checkClients * checkEach

	// And two that are refused, with JSON too.
	for _, bad := range []struct {
		query string
		code  int
	}{{"x", http.StatusBadRequest}, {fmt.Sprint(nRows + 1), http.StatusNotFound}} {
		code, body, err := get(client, base+bad.query)
		if err != nil {
			return n, err
		}
		var e struct{ Error string }
		if code != bad.code || json.Unmarshal(body, &e) != nil || e.Error == "" {
			return n, fmt.Errorf("id=%s: status %d, %q; want %d and a JSON error", bad.query, code, body, bad.code)
		}
	}
	return n, nil
}

// checkItem gets item id and checks the answer against the row both
// backends hold.
func checkItem(client *http.Client, base string, id int64, rounds int) error {
	code, body, err := get(client, fmt.Sprint(base, id))
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("id=%d: status %d: %s", id, code, body)
	}
	var got item
	if err := json.Unmarshal(body, &got); err != nil {
		return fmt.Errorf("id=%d: %v in %q", id, err, body)
	}
	r := rowFor(id)
	want := item{ID: id, Name: r.Name, Score: r.Score, Digest: digest(r, rounds)}
	if got != want {
		return fmt.Errorf("id=%d: got %+v, want %+v", id, got, want)
	}
	return nil
}

func get(client *http.Client, url string) (code int, body []byte, err error) {
	resp, err := client.Get(url)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}
