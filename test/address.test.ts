// Address strings as users write them, and the errors for the ones that are
// not addresses: every invalid form throws an AddressError
// (ERR_HANDOVER_ADDRESS) whose message quotes the input and lists the forms.
import { describe, expect, it } from 'vitest';
import { AddressError, formatBound, parseAddress } from '../src/platform/address';

describe('parseAddress: valid forms', () => {
  it("':PORT' is every interface, dual stack ('::' with the IPv4 fallback flag)", () => {
    expect(parseAddress(':9222')).toEqual({ kind: 'tcp', text: ':9222', host: '::', port: 9222, anyHost: true });
  });

  it('a bare port number means the same as :PORT', () => {
    expect(parseAddress(9222)).toEqual({ kind: 'tcp', text: ':9222', host: '::', port: 9222, anyHost: true });
    expect(parseAddress(0)).toMatchObject({ kind: 'tcp', host: '::', port: 0, anyHost: true });
  });

  it('IPv4 HOST:PORT, including 0.0.0.0 and the ephemeral port 0', () => {
    expect(parseAddress('0.0.0.0:9223')).toEqual({ kind: 'tcp', text: '0.0.0.0:9223', host: '0.0.0.0', port: 9223, anyHost: false });
    expect(parseAddress('127.0.0.1:0')).toEqual({ kind: 'tcp', text: '127.0.0.1:0', host: '127.0.0.1', port: 0, anyHost: false });
    expect(parseAddress('127.0.0.1:65535')).toMatchObject({ port: 65535 });
  });

  it("'[IPv6]:PORT'", () => {
    expect(parseAddress('[::1]:443')).toEqual({ kind: 'tcp', text: '[::1]:443', host: '::1', port: 443, anyHost: false });
    expect(parseAddress('[::]:80')).toMatchObject({ kind: 'tcp', host: '::', port: 80, anyHost: false });
  });

  it("'localhost:PORT' is the IPv4 loopback, and keeps the text as written", () => {
    expect(parseAddress('localhost:8080')).toEqual({ kind: 'tcp', text: 'localhost:8080', host: '127.0.0.1', port: 8080, anyHost: false });
  });

  it("'unix:/path' is a Unix socket path", () => {
    expect(parseAddress('unix:/path.sock')).toEqual({ kind: 'unix', text: 'unix:/path.sock', path: '/path.sock' });
    expect(parseAddress('unix:/run/app dir/a:b.sock')).toEqual({ kind: 'unix', text: 'unix:/run/app dir/a:b.sock', path: '/run/app dir/a:b.sock' });
  });

  it("'unix:@name' is a Linux abstract socket ('@' kept for the binding)", () => {
    expect(parseAddress('unix:@name')).toEqual({ kind: 'unix', text: 'unix:@name', path: '@name' });
  });
});

describe('parseAddress: invalid forms', () => {
  const invalid: [string, RegExp][] = [
    ['', /invalid address ""/],
    ['foo', /invalid address "foo"/],
    [':99999', /invalid address ":99999".*port/],
    [':65536', /invalid address ":65536".*port/],
    [':-1', /invalid address ":-1"/],
    [':', /invalid address ":"/],
    ['127.0.0.1:', /invalid address "127.0.0.1:"/],
    ['127.0.0.1:80x', /invalid address "127.0.0.1:80x"/],
    ['1.2.3:80', /invalid address "1.2.3:80".*1\.2\.3/],
    ['256.0.0.1:80', /invalid address "256.0.0.1:80"/],
    ['example.com:80', /invalid address "example.com:80"/],
    ['::1:443', /invalid address "::1:443"/], // IPv6 needs brackets
    ['[zz]:1', /invalid address "\[zz\]:1".*zz/],
    ['[::1]:', /invalid address "\[::1\]:"/],
    ['[::1]', /invalid address "\[::1\]"/],
    ['unix:', /invalid address "unix:".*Unix path/],
  ];
  for (const [input, message] of invalid) {
    it(`${JSON.stringify(input)} throws AddressError quoting it`, () => {
      let thrown: unknown;
      try {
        parseAddress(input);
      } catch (error) {
        thrown = error;
      }
      expect(thrown, `parseAddress(${JSON.stringify(input)}) should throw`).toBeInstanceOf(AddressError);
      const error = thrown as AddressError;
      expect(error).toBeInstanceOf(TypeError);
      expect(error.code).toBe('ERR_HANDOVER_ADDRESS');
      expect(error.message).toContain(JSON.stringify(input));
      expect(error.message).toMatch(message);
      // and tells the user what would have been valid
      expect(error.message).toContain("'unix:/path/to.sock'");
    });
  }

  it('whitespace in an address is named as the cause, with the address it should be', () => {
    for (const [input, where, fixed] of [[':9222 ', 'ends with', ':9222'], [' 127.0.0.1:80', 'starts with', '127.0.0.1:80'],
      ['127.0.0.1: 80', 'contains', '127.0.0.1:80'], ['unix:/run/app.sock\n', 'ends with', 'unix:/run/app.sock']]) {
      expect(() => parseAddress(input)).toThrow(AddressError);
      expect(() => parseAddress(input)).toThrow(`invalid address ${JSON.stringify(input)}: it ${where} whitespace; remove it (${JSON.stringify(fixed)})`);
    }
  });

  it('an invalid port number throws too', () => {
    expect(() => parseAddress(99999)).toThrow(AddressError);
    expect(() => parseAddress(-1)).toThrow(AddressError);
    expect(() => parseAddress(1.5)).toThrow(AddressError);
  });
});

describe('formatBound', () => {
  it('writes addresses as a user would type them', () => {
    expect(formatBound({ family: 'IPv4', address: '127.0.0.1', port: 41234 })).toBe('127.0.0.1:41234');
    expect(formatBound({ family: 'IPv6', address: '::1', port: 443 })).toBe('[::1]:443');
    expect(formatBound({ family: 'IPv6', address: '::', port: 9222 })).toBe('[::]:9222');
    expect(formatBound({ family: 'unix', path: '/run/app.sock' })).toBe('unix:/run/app.sock');
    expect(formatBound({ family: 'unix', path: '@name' })).toBe('unix:@name');
  });

  it('round-trips through parseAddress', () => {
    for (const bound of [
      { family: 'IPv4', address: '0.0.0.0', port: 9223 },
      { family: 'IPv6', address: '::1', port: 443 },
      { family: 'unix', path: '/tmp/x.sock' },
    ]) {
      const parsed = parseAddress(formatBound(bound));
      if (parsed.kind === 'unix') expect(parsed.path).toBe(bound.path);
      else expect([parsed.host, parsed.port]).toEqual([bound.address, bound.port]);
    }
  });
});
