package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/pier-oci/pier/httpapi/auth"
)

// htpasswdCommand adds a user to an htpasswd file, or changes a user's
// password (bcrypt), so a Pi needs no apache2-utils. The password is
// asked twice on a terminal, without echo, or read as the first line of
// standard input otherwise (echo "$PW" | pier htpasswd FILE USER).
func htpasswdCommand(path, user string, stdin *os.File, stdout, stderr io.Writer) int {
	password, err := readPassword(stdin, stderr)
	if err == nil {
		err = auth.SetPassword(path, user, password)
	}
	if err != nil {
		fmt.Fprintf(stderr, "pier: htpasswd: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: password of %s set\n", path, user)
	return 0
}

func readPassword(in *os.File, prompt io.Writer) (string, error) {
	fd := int(in.Fd())
	termios, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		// Not a terminal: the first line of the input.
		line, err := bufio.NewReader(in).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", err
		}
		return strings.TrimRight(line, "\r\n"), nil
	}
	noEcho := *termios
	noEcho.Lflag &^= unix.ECHO
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &noEcho); err != nil {
		return "", err
	}
	defer unix.IoctlSetTermios(fd, unix.TCSETS, termios)
	r := bufio.NewReader(in)
	ask := func(p string) (string, error) {
		fmt.Fprint(prompt, p)
		line, err := r.ReadString('\n')
		fmt.Fprintln(prompt)
		return strings.TrimRight(line, "\r\n"), err
	}
	first, err := ask("Password: ")
	if err != nil {
		return "", err
	}
	again, err := ask("Again: ")
	if err != nil {
		return "", err
	}
	if first != again {
		return "", errors.New("the passwords differ")
	}
	return first, nil
}
