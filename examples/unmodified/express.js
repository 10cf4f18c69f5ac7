// An ordinary Express app: nothing in it knows about handover.
//   npx handover start --workers 2 examples/unmodified/express.js
//   curl -i http://127.0.0.1:3000/          (x-pid: the worker that answered)
//   npx handover reload                       new workers, no dropped request
//   npx handover status                       workers, memory, last reload
//   npx handover stop
const express = require('express');

const app = express();
app.get('/', (req, res) => {
  res.set('x-pid', String(process.pid));
  res.send(`hello from express, worker ${process.pid}\n`);
});
app.listen(Number(process.env.PORT || 3000), () => console.log(`listening on ${process.env.PORT || 3000}`));
