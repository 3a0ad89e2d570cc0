// Vite config for the dlsys web UI. `npm run build` writes index.html and assets/ (hashed
// names) into dist/ or --outDir; `dlsys server --web-dir DIR` serves them at / and /assets/.
// For development, `DLSYS_URL=http://127.0.0.1:8080 npm run dev` proxies the API to a server.
import { defineConfig } from 'vite';

const target = process.env.DLSYS_URL ?? 'http://127.0.0.1:8080';
const proxy = {
  '/api': { target, changeOrigin: true },
  '/v2': { target, changeOrigin: true },
  '/metrics': { target, changeOrigin: true },
};

export default defineConfig({
  base: '/',
  build: {
    outDir: 'dist',
    assetsDir: 'assets',
    target: 'es2022',
    sourcemap: false,
    chunkSizeWarningLimit: 800,
    modulePreload: { polyfill: false },
  },
  server: { proxy },
  preview: { proxy },
});
