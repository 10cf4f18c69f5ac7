// An ordinary Fastify app: `await app.listen({ port })` as its docs show.
//   npx handover start --workers 2 examples/unmodified/fastify.js
//   curl -i http://127.0.0.1:3001/ ; npx handover reload ; npx handover stop
const fastify = require('fastify');

async function main() {
  const app = fastify();
  app.get('/', async (request, reply) => {
    reply.header('x-pid', String(process.pid));
    return `hello from fastify, worker ${process.pid}\n`;
  });
  await app.listen({ port: Number(process.env.PORT || 3001) });
}
main();
