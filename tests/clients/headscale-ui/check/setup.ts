// headscale-ui keeps the server URL and API key in the browser's localStorage.
const items = new Map<string, string>();
globalThis.localStorage = {
  getItem: (k: string) => items.get(k) ?? null,
  setItem: (k: string, v: string) => void items.set(k, String(v)),
  removeItem: (k: string) => void items.delete(k),
  clear: () => items.clear(),
  key: (i: number) => [...items.keys()][i] ?? null,
  get length() { return items.size; },
} as Storage;
localStorage.setItem("headscaleURL", process.env.UI_API_URL!);
localStorage.setItem("headscaleAPIKey", process.env.UI_API_KEY!);
